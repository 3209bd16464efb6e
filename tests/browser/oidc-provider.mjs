// A real OpenID provider for the SSO tests: panva's oidc-provider (a certified implementation)
// on 127.0.0.1 (a free port), with PKCE required, the device flow, dev interactions (any login
// name and password), and accounts whose groups come from their name: `dev-…` is in group dev,
// `ops-…` in ops. Clients: `ztk` (the gateway's console: confidential, client_secret_basic; its
// redirect URI arrives on stdin as `redirect URL` once the gateway listens) and `ztk-cli` (the
// CLI: public, native, loopback redirects on any port, and the device flow).
// Prints one JSON line {"issuer": …} when it listens; runs until killed.
import http from 'node:http';
import readline from 'node:readline';
import Provider from 'oidc-provider';

const secret = process.env.ZTK_OIDC_SECRET;
let consoleRedirect = 'https://127.0.0.1:1/oidc/callback';
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [word, value] = line.trim().split(/\s+/, 2);
  if (word === 'redirect') consoleRedirect = value;
});

// In-memory storage, except that the console's client is made when asked for (its redirect
// URI is known only once the gateway listens).
const store = new Map();
class Adapter {
  constructor(name) { this.name = name; }
  key(id) { return `${this.name}:${id}`; }
  async upsert(id, payload) {
    store.set(this.key(id), payload);
    if (payload.grantId) {
      const g = `grant:${payload.grantId}`;
      store.set(g, [...(store.get(g) || []), this.key(id)]);
    }
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, id);
    if (payload.uid) store.set(`uid:${payload.uid}`, id);
  }
  async find(id) {
    if (this.name === 'Client' && id === 'ztk') {
      return {
        client_id: 'ztk', client_secret: secret, redirect_uris: [consoleRedirect],
        grant_types: ['authorization_code'], response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      };
    }
    return store.get(this.key(id));
  }
  async findByUserCode(code) { return this.find(store.get(`userCode:${code}`)); }
  async findByUid(uid) { return this.find(store.get(`uid:${uid}`)); }
  async consume(id) { const p = store.get(this.key(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const k of store.get(`grant:${grantId}`) || []) store.delete(k);
    store.delete(`grant:${grantId}`);
  }
}

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;
const provider = new Provider(issuer, {
  adapter: Adapter,
  clients: [{
    client_id: 'ztk-cli', application_type: 'native', token_endpoint_auth_method: 'none',
    redirect_uris: ['http://127.0.0.1/callback'],
    grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
  }],
  features: { devInteractions: { enabled: true }, deviceFlow: { enabled: true } },
  pkce: { required: () => true },
  // Claims in the ID token itself (the gateway reads only the ID token).
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  async findAccount(_ctx, id) {
    const groups = id.startsWith('dev-') ? ['dev'] : id.startsWith('ops-') ? ['ops'] : [];
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.com`, email_verified: true, name: id, groups };
      },
    };
  },
  // The default policy asks for consent on each grant; the dev interaction pages do both.
});
provider.proxy = false;
server.on('request', provider.callback());
console.log(JSON.stringify({ issuer }));
