//! `ztk access`: who can do what, answered by the gateway with the same function that enforces
//! it on every request.

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::cli::UsageError;
use crate::client::api::{ApiError, GatewayApi};
use crate::client::config::{ClientConfig, Paths};
use crate::client::token::TokenStore;
use crate::protocol::{AccessListQuery, AccessQuery, RoleGrant};

/// Who can do what: check a request, find who may make it, list effective rules.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AccessCommand,
}

#[derive(Debug, clap::Args)]
struct RequestArgs {
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection, impersonate.
    verb: String,
    /// The resource: pods, pods/exec (with a subresource), deployments.apps, deploy, or a
    /// non-resource URL such as /version.
    resource: String,
    /// One object's name (e.g. the user for `impersonate users NAME`).
    name: Option<String>,
    /// The namespace (default: cluster-wide, i.e. all namespaces or a cluster-scoped resource).
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: Option<String>,
    /// The cluster (default: the one chosen at login, or the only one offered).
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
}

// Deferred, as `audit`'s subcommands are (commands/audit/mod.rs).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum AccessCommand {
    /// Check whether a request is allowed; prints yes or no and exits 0 or 1.
    CanI {
        #[command(flatten)]
        request: RequestArgs,
        /// Ask for another user (administrators: needs the impersonate verb on users).
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
    },
    /// List the role bindings and the users that allow a request (administrators).
    WhoCan {
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Print the effective rules of a user: every rule of every role bound to them.
    List {
        /// Another user (administrators; default: yourself).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
    },
}

struct Client {
    api: GatewayApi,
    token: String,
    config: ClientConfig,
}

fn connect() -> Result<Client> {
    let paths = Paths::from_env()?;
    let config = ClientConfig::load(&paths)?
        .context("not logged in; run `ztk login --gateway URL --user NAME`")?;
    let token = TokenStore::for_config(&paths, &config)
        .get()?
        .context("no session; run `ztk login`")?;
    let api = GatewayApi::new(&config.gateway, &config.roots()?)?;
    Ok(Client { api, token, config })
}

fn query(client: &Client, request: RequestArgs, user: Option<String>) -> Result<AccessQuery> {
    Ok(AccessQuery {
        verb: request.verb,
        resource: request.resource,
        name: request.name,
        namespace: request.namespace,
        cluster: client.config.pick_cluster(request.cluster.as_deref())?,
        user,
    })
}

/// A question the gateway could not parse (a bad resource, an unknown cluster or user) is a
/// usage error (exit 2), so it is never mistaken for a "no" (exit 1).
fn answer_error(err: ApiError) -> anyhow::Error {
    match err {
        ApiError::Status { code: 400, message } => UsageError(message).into(),
        other => anyhow::Error::new(other).context("the gateway could not answer"),
    }
}

fn scope(grant: &RoleGrant) -> (String, String) {
    (
        grant.cluster.clone().unwrap_or_else(|| "*".into()),
        grant.namespace.clone().unwrap_or_else(|| "*".into()),
    )
}

pub async fn run(args: Args) -> Result<i32> {
    let client = connect()?;
    match args.command {
        AccessCommand::CanI { request, as_user } => {
            let q = query(&client, request, as_user)?;
            let answer = client
                .api
                .can_i(&client.token, &q)
                .await
                .map_err(answer_error)?;
            println!("{}", if answer.allowed { "yes" } else { "no" });
            if !answer.allowed {
                eprintln!("{}", answer.reason);
            }
            Ok(if answer.allowed { 0 } else { 1 })
        }
        AccessCommand::WhoCan { request } => {
            let q = query(&client, request, None)?;
            let answer = client
                .api
                .who_can(&client.token, &q)
                .await
                .map_err(answer_error)?;
            println!("Request: {} on cluster {}", answer.request, q.cluster);
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header(vec!["ROLE", "SUBJECT", "CLUSTER", "NAMESPACE"]);
            for b in &answer.bindings {
                let (cluster, ns) = scope(b);
                table.add_row(vec![b.role.clone(), b.subject.clone(), cluster, ns]);
            }
            if answer.bindings.is_empty() {
                println!("No binding allows it.");
            } else {
                println!("{table}");
            }
            println!("Users: {}", answer.users.join(", "));
            Ok(0)
        }
        AccessCommand::List { user } => {
            let answer = client
                .api
                .access_list(&client.token, &AccessListQuery { user })
                .await
                .map_err(answer_error)?;
            print!("User: {}", answer.user);
            if !answer.groups.is_empty() {
                print!(" (groups: {})", answer.groups.join(", "));
            }
            println!();
            if answer.rules.is_empty() {
                println!("No role bindings: every request is denied.");
                return Ok(0);
            }
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header(vec!["ROLE", "VIA", "CLUSTER", "NAMESPACE", "RULE"]);
            for r in &answer.rules {
                let (cluster, ns) = scope(&r.grant);
                table.add_row(vec![
                    r.grant.role.clone(),
                    r.grant.subject.clone(),
                    cluster,
                    ns,
                    r.rule.clone(),
                ]);
            }
            println!("{table}");
            Ok(0)
        }
    }
}
