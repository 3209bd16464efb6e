# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ztk_global_optspecs
    string join \n h/help V/version
end

function __fish_ztk_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ztk_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ztk_using_subcommand
    set -l cmd (__fish_ztk_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ztk -n "__fish_ztk_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_needs_command" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "login" -d 'Log in to a ztk gateway (with a password, or with single sign-on: --sso); the session token goes to the OS keyring'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "logout" -d 'Log out: revoke the session at the gateway and remove the stored token'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "status" -d 'Show the current login: user, gateway, session expiry, your roles and clusters'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "kubectl" -d 'Run kubectl through the gateway; every API call is audited with this command line'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "kubeconfig" -d 'Write a kubeconfig for plain kubectl, with a context `ztk-CLUSTER` per cluster you may use'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "credential" -d 'Print a credential for kubectl (the exec plugin of kubeconfigs from `ztk kubeconfig`)'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "proxy" -d 'Run the persistent local proxy that kubeconfigs from `ztk kubeconfig` point at (foreground)'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "audit" -d 'Browse the audit trail: every command, and every API call it caused'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "access" -d 'Who can do what: check a request, find who may make it, list effective rules'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "gateway" -d 'Run the zero-trust gateway and manage its users, sessions, roles and bindings'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "agent" -d 'Connect a cluster that accepts no inbound connection to the gateway, through a tunnel this agent dials out (the gateway\'s cluster has `agent = true`)'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "demo" -d 'Try ztk end to end on the built-in sandbox cluster (no cluster needed)'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "sandbox" -d 'Run the built-in sandbox cluster on its own (no gateway in front)'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "man" -d 'Write man pages into a directory'
complete -c ztk -n "__fish_ztk_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand login" -l gateway -d 'The gateway\'s URL, e.g. https://ztk.example.com:8443 (default: the last one used)' -r
complete -c ztk -n "__fish_ztk_using_subcommand login" -s u -l user -d 'Your user name at the gateway (default: the last one used)' -r
complete -c ztk -n "__fish_ztk_using_subcommand login" -l ca-file -d 'A PEM file with the CA that signed the gateway\'s certificate (default: the system\'s CAs)' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand login" -l cluster -d 'The cluster `ztk kubectl` uses when --cluster is not given' -r
complete -c ztk -n "__fish_ztk_using_subcommand login" -l sso -d 'Sign in with the gateway\'s OpenID provider (single sign-on) in a browser'
complete -c ztk -n "__fish_ztk_using_subcommand login" -l device -d 'With --sso: the device flow, for hosts without a browser (prints a URL and a code to enter on any device)'
complete -c ztk -n "__fish_ztk_using_subcommand login" -l no-browser -d 'With --sso: print the URL instead of opening a browser'
complete -c ztk -n "__fish_ztk_using_subcommand login" -l password-stdin -d 'Read the password from standard input (first line) instead of prompting'
complete -c ztk -n "__fish_ztk_using_subcommand login" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand login" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand logout" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand logout" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand status" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand status" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand kubectl" -l cluster -d 'The cluster to use (default: the one chosen at login, or the only one offered)' -r
complete -c ztk -n "__fish_ztk_using_subcommand kubectl" -l kubectl -d 'The kubectl binary to run' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand kubectl" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand kubectl" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand kubeconfig" -s o -l output -d 'Write to this file instead of ~/.kube/ztk.yaml (`-` prints it)' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand kubeconfig" -l port -d 'Loopback port for the persistent proxy (default: the one chosen before, else a free one)' -r
complete -c ztk -n "__fish_ztk_using_subcommand kubeconfig" -l merge -d 'Add the contexts to your kubeconfig ($KUBECONFIG\'s first file, else ~/.kube/config), replacing only ztk\'s own entries and keeping a backup of the file'
complete -c ztk -n "__fish_ztk_using_subcommand kubeconfig" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand kubeconfig" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand credential" -l cluster -d 'The cluster kubectl is about to use' -r
complete -c ztk -n "__fish_ztk_using_subcommand credential" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand credential" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and not __fish_seen_subcommand_from stop status help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and not __fish_seen_subcommand_from stop status help" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and not __fish_seen_subcommand_from stop status help" -f -a "stop" -d 'Stop the running proxy'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and not __fish_seen_subcommand_from stop status help" -f -a "status" -d 'Show whether the proxy runs, its pid and port (exit code 3 when it does not run)'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and not __fish_seen_subcommand_from stop status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and __fish_seen_subcommand_from stop" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop the running proxy'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show whether the proxy runs, its pid and port (exit code 3 when it does not run)'
complete -c ztk -n "__fish_ztk_using_subcommand proxy; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "list" -d 'List commands (default) or API calls, newest first'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "show" -d 'Show one command with all its API calls'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "export" -d 'Write the whole filtered audit trail to a file or standard output (CSV by default)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "push" -d 'Ship the local records the gateway has not acknowledged yet, now'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "status" -d 'Show the local outbox: pending records, the oldest, the last success and the last error'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "tui" -d 'Browse the audit trail interactively: a live, filterable, full-screen view'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "tail" -d 'Follow new records as they are written, one line each (for log shippers)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "stats" -d 'Latency and activity: calls, errors and duration percentiles per cluster, user, verb, resource or namespace, optionally over time'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "verify" -d 'Check that no record was changed, inserted or deleted outside ztk (exit code 1 if one was)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "seed" -d 'Fill the local store with N synthetic records (for benchmarks)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and not __fish_seen_subcommand_from list show export push status tui tail stats verify seed help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l since -d 'Only records at or after this time: RFC 3339, or a duration ago (15m, 24h, 7d)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l until -d 'Only records before this time: RFC 3339, or a duration ago' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l user -d 'Only this user\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l cluster -d 'Only this cluster\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -s n -l namespace -d 'Only this namespace' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l resource -d 'Only this resource (pods), or subresource (pods/log)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l verb -d 'Only this verb (get, list, watch, create, update, patch, delete, deletecollection, ...)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l status -d 'Only this HTTP status (404) or class (4xx)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l access-method -d 'Only this access method: cli, browser or api' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l command -d 'Only commands whose command line contains this text' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l min-duration -d 'Only calls (or commands) that took at least this long (250ms, 2s)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l view -d 'Commands (one row per command) or calls (one row per API call)' -r -f -a "commands\t'One row per command, with its call count, statuses and duration'
calls\t'One row per API call'"
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format (default: table on a terminal, ndjson otherwise)' -r -f -a "table\t'A table for people'
wide\t'A table with every field'
json\t'One JSON array'
ndjson\t'One JSON object per line'
csv\t'RFC 4180 CSV with a header row (cells that a spreadsheet would run as formulas are prefixed with `\'`)'
k8s-audit\t'A Kubernetes audit.k8s.io/v1 EventList (API calls only), ztk\'s fields as annotations'"
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l limit -d 'At most this many rows' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -l remote -d 'Query the gateway\'s authoritative log instead of the local one'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from show" -s o -l output -d 'Output format for the calls (default: table on a terminal, ndjson otherwise)' -r -f -a "table\t'A table for people'
wide\t'A table with every field'
json\t'One JSON array'
ndjson\t'One JSON object per line'
csv\t'RFC 4180 CSV with a header row (cells that a spreadsheet would run as formulas are prefixed with `\'`)'
k8s-audit\t'A Kubernetes audit.k8s.io/v1 EventList (API calls only), ztk\'s fields as annotations'"
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from show" -l remote -d 'Read the gateway\'s log (needs the full ID)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l since -d 'Only records at or after this time: RFC 3339, or a duration ago (15m, 24h, 7d)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l until -d 'Only records before this time: RFC 3339, or a duration ago' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l user -d 'Only this user\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l cluster -d 'Only this cluster\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -s n -l namespace -d 'Only this namespace' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l resource -d 'Only this resource (pods), or subresource (pods/log)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l verb -d 'Only this verb (get, list, watch, create, update, patch, delete, deletecollection, ...)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l status -d 'Only this HTTP status (404) or class (4xx)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l access-method -d 'Only this access method: cli, browser or api' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l command -d 'Only commands whose command line contains this text' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l min-duration -d 'Only calls (or commands) that took at least this long (250ms, 2s)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l format -d 'Export in another format instead of CSV' -r -f -a "table\t'A table for people'
wide\t'A table with every field'
json\t'One JSON array'
ndjson\t'One JSON object per line'
csv\t'RFC 4180 CSV with a header row (cells that a spreadsheet would run as formulas are prefixed with `\'`)'
k8s-audit\t'A Kubernetes audit.k8s.io/v1 EventList (API calls only), ztk\'s fields as annotations'"
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -s o -l output -d 'Write to this file (atomically: nothing partial is left on error) instead of standard output' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l view -d 'Commands or calls' -r -f -a "commands\t'One row per command, with its call count, statuses and duration'
calls\t'One row per API call'"
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l limit -d 'At most this many rows (default: all)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l csv -d 'Export CSV (the default)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -l remote -d 'Export the gateway\'s authoritative log instead of the local one'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from export" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from push" -l json -d 'Send JSON batches instead of the compact encoding'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from push" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from push" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from status" -l json -d 'Print JSON (one object per user) instead of text'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tui" -s f -l filter -d 'The filter to start with, in the filter bar\'s language: `user:alice ns:prod verb:delete status:4xx since:1h some text`' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tui" -l view -d 'Start with commands (one row per command) or API calls' -r -f -a "commands\t'One row per command, with its call count, statuses and duration'
calls\t'One row per API call'"
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tui" -l remote -d 'Browse the gateway\'s authoritative log instead of the local one (the `r` key switches)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tui" -l bench -d 'Measure first-screen and key-press times on the local store, without a terminal, and print them'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tui" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tui" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l since -d 'Only records at or after this time: RFC 3339, or a duration ago (15m, 24h, 7d)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l until -d 'Only records before this time: RFC 3339, or a duration ago' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l user -d 'Only this user\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l cluster -d 'Only this cluster\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -s n -l namespace -d 'Only this namespace' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l resource -d 'Only this resource (pods), or subresource (pods/log)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l verb -d 'Only this verb (get, list, watch, create, update, patch, delete, deletecollection, ...)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l status -d 'Only this HTTP status (404) or class (4xx)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l access-method -d 'Only this access method: cli, browser or api' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l command -d 'Only commands whose command line contains this text' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l min-duration -d 'Only calls (or commands) that took at least this long (250ms, 2s)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -s o -l output -d 'Output format (default: table on a terminal, ndjson otherwise). `k8s-audit` writes one audit.k8s.io/v1 Event per line, as the Kubernetes log backend does (API calls only)' -r -f -a "ndjson\t'One JSON object per record, with `kind` (call or command) and `seq`'
k8s-audit\t'One audit.k8s.io/v1 Event per line (API calls only)'
table\t'One readable line per record'"
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -l remote -d 'Follow the gateway\'s authoritative log instead of the local one'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from tail" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l since -d 'Only records at or after this time: RFC 3339, or a duration ago (15m, 24h, 7d)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l until -d 'Only records before this time: RFC 3339, or a duration ago' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l user -d 'Only this user\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l cluster -d 'Only this cluster\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -s n -l namespace -d 'Only this namespace' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l resource -d 'Only this resource (pods), or subresource (pods/log)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l verb -d 'Only this verb (get, list, watch, create, update, patch, delete, deletecollection, ...)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l status -d 'Only this HTTP status (404) or class (4xx)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l access-method -d 'Only this access method: cli, browser or api' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l command -d 'Only commands whose command line contains this text' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l min-duration -d 'Only calls (or commands) that took at least this long (250ms, 2s)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l by -d 'Group by this field' -r -f -a "cluster\t''
user\t''
verb\t''
resource\t''
namespace\t''"
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l interval -d 'Also show a series: one point per interval and group (1m, 15m, 1h, 1d; needs --since)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l slowest -d 'List this many of the slowest calls' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -s o -l output -d 'Output format' -r -f -a "table\t'Tables for people'
json\t'The whole answer as one JSON object'
csv\t'CSV: the series with --interval, the groups otherwise'"
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -l remote -d 'The gateway\'s authoritative log instead of the local one'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from stats" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from verify" -l db -d 'Verify this store file instead of the local one (a copy of a gateway\'s audit.db, say)' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from verify" -l public-key -d 'Accept only checkpoints signed by this Ed25519 public key (hex, as the gateway prints it)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from verify" -l remote -d 'Have the gateway verify its authoritative store (administrators only)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from verify" -l json -d 'Print the report as JSON'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from verify" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from seed" -l count -d 'How many API-call records to add (plus one command per ten calls)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from seed" -l db -d 'The store to fill (default: the local store)' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from seed" -l user -d 'Make every record this user\'s (default: a mix of eight users)' -r
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from seed" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from seed" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "list" -d 'List commands (default) or API calls, newest first'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one command with all its API calls'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "export" -d 'Write the whole filtered audit trail to a file or standard output (CSV by default)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "push" -d 'Ship the local records the gateway has not acknowledged yet, now'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show the local outbox: pending records, the oldest, the last success and the last error'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "tui" -d 'Browse the audit trail interactively: a live, filterable, full-screen view'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "tail" -d 'Follow new records as they are written, one line each (for log shippers)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "stats" -d 'Latency and activity: calls, errors and duration percentiles per cluster, user, verb, resource or namespace, optionally over time'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check that no record was changed, inserted or deleted outside ztk (exit code 1 if one was)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "seed" -d 'Fill the local store with N synthetic records (for benchmarks)'
complete -c ztk -n "__fish_ztk_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand access; and not __fish_seen_subcommand_from can-i who-can list help" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand access; and not __fish_seen_subcommand_from can-i who-can list help" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand access; and not __fish_seen_subcommand_from can-i who-can list help" -f -a "can-i" -d 'Check whether a request is allowed; prints yes or no and exits 0 or 1'
complete -c ztk -n "__fish_ztk_using_subcommand access; and not __fish_seen_subcommand_from can-i who-can list help" -f -a "who-can" -d 'List the role bindings and the users that allow a request (administrators)'
complete -c ztk -n "__fish_ztk_using_subcommand access; and not __fish_seen_subcommand_from can-i who-can list help" -f -a "list" -d 'Print the effective rules of a user: every rule of every role bound to them'
complete -c ztk -n "__fish_ztk_using_subcommand access; and not __fish_seen_subcommand_from can-i who-can list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from can-i" -s n -l namespace -d 'The namespace (default: cluster-wide, i.e. all namespaces or a cluster-scoped resource)' -r
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from can-i" -l cluster -d 'The cluster (default: the one chosen at login, or the only one offered)' -r
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from can-i" -l as -d 'Ask for another user (administrators: needs the impersonate verb on users)' -r
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from can-i" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from can-i" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from who-can" -s n -l namespace -d 'The namespace (default: cluster-wide, i.e. all namespaces or a cluster-scoped resource)' -r
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from who-can" -l cluster -d 'The cluster (default: the one chosen at login, or the only one offered)' -r
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from who-can" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from who-can" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from list" -l user -d 'Another user (administrators; default: yourself)' -r
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from help" -f -a "can-i" -d 'Check whether a request is allowed; prints yes or no and exits 0 or 1'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from help" -f -a "who-can" -d 'List the role bindings and the users that allow a request (administrators)'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from help" -f -a "list" -d 'Print the effective rules of a user: every rule of every role bound to them'
complete -c ztk -n "__fish_ztk_using_subcommand access; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "serve" -d 'Serve the gateway: authenticate, authorize, relay and audit every Kubernetes request'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "user" -d 'Manage the users who may log in'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "session" -d 'Manage login sessions'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "role" -d 'Manage roles and role bindings; changes take effect in a running gateway within a second'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "clusters" -d 'Inspect how the gateway reaches its clusters (run on the gateway host)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "agent" -d 'Enroll and revoke the agents of clusters reached through `ztk agent`'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "sinks" -d 'Inspect the SIEM sinks that stream the audit trail (run on the gateway host)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "audit" -d 'Read the gateway\'s own audit log (run on the gateway host); `verify` checks its chain'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "migrate" -d 'Copy this gateway\'s SQLite data (users, sessions, bindings, the audit trail with its chain) into PostgreSQL, for several gateways to share; safe to run again'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and not __fish_seen_subcommand_from serve user session role clusters agent sinks audit migrate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from serve" -s c -l config -d 'The gateway\'s TOML config file' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from serve" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from serve" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from user" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from user" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from user" -f -a "add" -d 'Add a user; the password is read from standard input'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from user" -f -a "list" -d 'List the users'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from user" -f -a "remove" -d 'Remove a user and revoke their sessions'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from user" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from session" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from session" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from session" -f -a "revoke" -d 'Revoke every open session of a user; their next request is refused'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from session" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from role" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from role" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from role" -f -a "bind" -d 'Give a role to a user or a group, on one cluster or all, in one namespace or all'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from role" -f -a "unbind" -d 'Remove a binding (the same arguments as it was bound with)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from role" -f -a "apply" -d 'Store the custom roles of a file (`[[roles]]` tables as in gateway.toml), replacing stored roles of the same names; running gateways use them within a second'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from role" -f -a "delete" -d 'Delete a stored custom role (its bindings stay, and grant nothing until it is back)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from role" -f -a "list" -d 'List the roles (built-in, from the config, stored) and the bindings'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from role" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from clusters" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from clusters" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from clusters" -f -a "status" -d 'Show each cluster: how it is reached, its credential\'s kind and expiry (never its value), the last call it answered and the last error'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from clusters" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from agent" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from agent" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from agent" -f -a "token" -d 'Print a one-time enrollment token for CLUSTER\'s agent (`ztk agent --token-file`)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from agent" -f -a "revoke" -d 'Revoke every certificate of CLUSTER\'s agents (and its unused tokens): their tunnels close within a second and are refused from then on. Enroll again with a new token'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from agent" -f -a "list" -d 'List the certificates issued to agents and the tokens not used yet'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from agent" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from sinks" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from sinks" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from sinks" -f -a "status" -d 'Show each sink\'s lag (records and age), last success and last error'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from sinks" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -s c -l config -d 'The gateway\'s TOML config file' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l since -d 'Only records at or after this time: RFC 3339, or a duration ago (15m, 24h, 7d)' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l until -d 'Only records before this time: RFC 3339, or a duration ago' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l user -d 'Only this user\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l cluster -d 'Only this cluster\'s records' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -s n -l namespace -d 'Only this namespace' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l resource -d 'Only this resource (pods), or subresource (pods/log)' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l verb -d 'Only this verb (get, list, watch, create, update, patch, delete, deletecollection, ...)' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l status -d 'Only this HTTP status (404) or class (4xx)' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l access-method -d 'Only this access method: cli, browser or api' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l command -d 'Only commands whose command line contains this text' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l min-duration -d 'Only calls (or commands) that took at least this long (250ms, 2s)' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l view -d 'Commands (one row per command) or calls (one row per API call)' -r -f -a "commands\t'One row per command, with its call count, statuses and duration'
calls\t'One row per API call'"
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -s o -l output -d 'Output format (default: table on a terminal, ndjson otherwise)' -r -f -a "table\t'A table for people'
wide\t'A table with every field'
json\t'One JSON array'
ndjson\t'One JSON object per line'
csv\t'RFC 4180 CSV with a header row (cells that a spreadsheet would run as formulas are prefixed with `\'`)'
k8s-audit\t'A Kubernetes audit.k8s.io/v1 EventList (API calls only), ztk\'s fields as annotations'"
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l limit -d 'At most this many rows' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -l remote -d 'Query the gateway\'s authoritative log instead of the local one'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -f -a "verify" -d 'Check the gateway\'s audit chain and signed checkpoints (exit code 1 if a record was changed, inserted or deleted outside ztk); prints the checkpoint public key to pin'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from audit" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from migrate" -s c -l config -d 'The gateway\'s TOML config file' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from migrate" -l to -d 'The PostgreSQL database to copy into: postgresql://USER@HOST:5432/DB?sslmode=verify-full (its password from --password-file, PGPASSFILE or ZTK_DATABASE_URL, never the command line, which every user of the host can read)' -r
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from migrate" -l password-file -d 'A file holding the database password (its first line)' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from migrate" -l json -d 'Print what was copied and the verification as JSON'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from migrate" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from migrate" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "serve" -d 'Serve the gateway: authenticate, authorize, relay and audit every Kubernetes request'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "user" -d 'Manage the users who may log in'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "session" -d 'Manage login sessions'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "role" -d 'Manage roles and role bindings; changes take effect in a running gateway within a second'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "clusters" -d 'Inspect how the gateway reaches its clusters (run on the gateway host)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "agent" -d 'Enroll and revoke the agents of clusters reached through `ztk agent`'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "sinks" -d 'Inspect the SIEM sinks that stream the audit trail (run on the gateway host)'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "audit" -d 'Read the gateway\'s own audit log (run on the gateway host); `verify` checks its chain'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "migrate" -d 'Copy this gateway\'s SQLite data (users, sessions, bindings, the audit trail with its chain) into PostgreSQL, for several gateways to share; safe to run again'
complete -c ztk -n "__fish_ztk_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l gateway -d 'The gateway\'s URL, https://HOST:PORT (repeat for each gateway of a PostgreSQL-shared group: the agent keeps a tunnel to each)' -r
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l ca-file -d 'The gateway\'s CA certificate (PEM), to verify it' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l cluster -d 'The cluster\'s name in the gateway\'s config' -r
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l token-file -d 'A file holding the one-time enrollment token (`ztk gateway agent token CLUSTER`); read only on the first start, before the agent has its certificate' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l kubeconfig -d 'Reach the cluster with this kubeconfig (exec plugins and token files work as on the gateway)' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l context -d 'The kubeconfig context (default: its current context)' -r
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l proxy -d 'Reach the gateways through this proxy: http://[USER:PASSWORD@]HOST:PORT (CONNECT) or socks5://HOST:PORT, as egress from private networks often must' -r
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l keepalive -d 'How often each gateway is pinged; one silent for as long is dialled again' -r
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l data-dir -d 'Where the agent keeps its key and certificate (default: ZTK_DATA_DIR or the user\'s data directory)' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand agent" -l incluster -d 'Reach the cluster with the pod\'s service account (the agent runs in the cluster)'
complete -c ztk -n "__fish_ztk_using_subcommand agent" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand agent" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand demo" -l kubectl -d 'The kubectl binary to run' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand demo" -l keep -d 'Keep the gateway and its web console running (and the temporary directory) until Ctrl-C'
complete -c ztk -n "__fish_ztk_using_subcommand demo" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand demo" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and not __fish_seen_subcommand_from serve help" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and not __fish_seen_subcommand_from serve help" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and not __fish_seen_subcommand_from serve help" -f -a "serve" -d 'Serve the sandbox until interrupted, and write a kubeconfig that reaches it'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and not __fish_seen_subcommand_from serve help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and __fish_seen_subcommand_from serve" -l listen -d 'Address to listen on (port 0 picks a free port)' -r
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and __fish_seen_subcommand_from serve" -l kubeconfig -d 'Where to write the kubeconfig (mode 0600: it holds the sandbox\'s credential)' -r -F
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and __fish_seen_subcommand_from serve" -l tls-name -d 'A name or address for the server certificate (repeatable; default 127.0.0.1 and localhost). With names the URL does not carry, the kubeconfig needs `tls-server-name`' -r
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and __fish_seen_subcommand_from serve" -l client-cert -d 'Put a client certificate in the kubeconfig instead of a bearer token'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and __fish_seen_subcommand_from serve" -l self-signed -d 'Serve one self-signed CA:TRUE certificate (also the kubeconfig\'s CA), as many lab clusters and appliances do'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and __fish_seen_subcommand_from serve" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and __fish_seen_subcommand_from serve" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and __fish_seen_subcommand_from help" -f -a "serve" -d 'Serve the sandbox until interrupted, and write a kubeconfig that reaches it'
complete -c ztk -n "__fish_ztk_using_subcommand sandbox; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand completions" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand completions" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand man" -s h -l help -d 'Print help'
complete -c ztk -n "__fish_ztk_using_subcommand man" -s V -l version -d 'Print version'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "login" -d 'Log in to a ztk gateway (with a password, or with single sign-on: --sso); the session token goes to the OS keyring'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "logout" -d 'Log out: revoke the session at the gateway and remove the stored token'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "status" -d 'Show the current login: user, gateway, session expiry, your roles and clusters'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "kubectl" -d 'Run kubectl through the gateway; every API call is audited with this command line'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "kubeconfig" -d 'Write a kubeconfig for plain kubectl, with a context `ztk-CLUSTER` per cluster you may use'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "credential" -d 'Print a credential for kubectl (the exec plugin of kubeconfigs from `ztk kubeconfig`)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "proxy" -d 'Run the persistent local proxy that kubeconfigs from `ztk kubeconfig` point at (foreground)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "audit" -d 'Browse the audit trail: every command, and every API call it caused'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "access" -d 'Who can do what: check a request, find who may make it, list effective rules'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "gateway" -d 'Run the zero-trust gateway and manage its users, sessions, roles and bindings'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "agent" -d 'Connect a cluster that accepts no inbound connection to the gateway, through a tunnel this agent dials out (the gateway\'s cluster has `agent = true`)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "demo" -d 'Try ztk end to end on the built-in sandbox cluster (no cluster needed)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "sandbox" -d 'Run the built-in sandbox cluster on its own (no gateway in front)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "man" -d 'Write man pages into a directory'
complete -c ztk -n "__fish_ztk_using_subcommand help; and not __fish_seen_subcommand_from login logout status kubectl kubeconfig credential proxy audit access gateway agent demo sandbox completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from proxy" -f -a "stop" -d 'Stop the running proxy'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from proxy" -f -a "status" -d 'Show whether the proxy runs, its pid and port (exit code 3 when it does not run)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "list" -d 'List commands (default) or API calls, newest first'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "show" -d 'Show one command with all its API calls'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "export" -d 'Write the whole filtered audit trail to a file or standard output (CSV by default)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "push" -d 'Ship the local records the gateway has not acknowledged yet, now'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "status" -d 'Show the local outbox: pending records, the oldest, the last success and the last error'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "tui" -d 'Browse the audit trail interactively: a live, filterable, full-screen view'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "tail" -d 'Follow new records as they are written, one line each (for log shippers)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "stats" -d 'Latency and activity: calls, errors and duration percentiles per cluster, user, verb, resource or namespace, optionally over time'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "verify" -d 'Check that no record was changed, inserted or deleted outside ztk (exit code 1 if one was)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "seed" -d 'Fill the local store with N synthetic records (for benchmarks)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from access" -f -a "can-i" -d 'Check whether a request is allowed; prints yes or no and exits 0 or 1'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from access" -f -a "who-can" -d 'List the role bindings and the users that allow a request (administrators)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from access" -f -a "list" -d 'Print the effective rules of a user: every rule of every role bound to them'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "serve" -d 'Serve the gateway: authenticate, authorize, relay and audit every Kubernetes request'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "user" -d 'Manage the users who may log in'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "session" -d 'Manage login sessions'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "role" -d 'Manage roles and role bindings; changes take effect in a running gateway within a second'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "clusters" -d 'Inspect how the gateway reaches its clusters (run on the gateway host)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "agent" -d 'Enroll and revoke the agents of clusters reached through `ztk agent`'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "sinks" -d 'Inspect the SIEM sinks that stream the audit trail (run on the gateway host)'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "audit" -d 'Read the gateway\'s own audit log (run on the gateway host); `verify` checks its chain'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "migrate" -d 'Copy this gateway\'s SQLite data (users, sessions, bindings, the audit trail with its chain) into PostgreSQL, for several gateways to share; safe to run again'
complete -c ztk -n "__fish_ztk_using_subcommand help; and __fish_seen_subcommand_from sandbox" -f -a "serve" -d 'Serve the sandbox until interrupted, and write a kubeconfig that reaches it'
