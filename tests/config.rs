//! Integration tests of the config loader: the reference file, defaults, and
//! one test per kind of error, each checking that the message names the
//! file, the right line and the key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use webcluster::config::{
    load, parse, AccessLog, AffinityMode, Config, ConfigError, QueueOrder, StatusKind,
};

const FILE: &str = "conf/test.toml";

/// One group "web" with one node "web1".
const MINIMAL: &str = r#"[[group]]
name = "web"
  [[group.node]]
  name = "web1"
  address = "127.0.0.1:8001"
"#;

fn ok(text: &str) -> Config {
    match parse(text, Path::new(FILE)) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got: {e}\n--- config:\n{text}"),
    }
}

fn err(text: &str) -> ConfigError {
    match parse(text, Path::new(FILE)) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// 1-based line of the first line containing `marker`.
fn line_of(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|l| l.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{marker:?} not in the text"))
}

/// The error names the file and `line`, the key, and says `what`.
#[track_caller]
fn assert_error(text: &str, line: usize, key: &str, what: &str) -> String {
    let e = err(text);
    let msg = e.to_string();
    let prefix = format!("{FILE}:{line}:");
    assert!(
        msg.starts_with(&prefix),
        "{msg:?} should start with {prefix:?}"
    );
    assert!(
        msg.contains(&format!("key `{key}`")),
        "{msg:?} should name key `{key}`"
    );
    assert!(msg.contains(what), "{msg:?} should contain {what:?}");
    assert_eq!(e.line(), Some(line), "{msg}");
    assert_eq!(e.key(), Some(key), "{msg}");
    msg
}

// ---------------------------------------------------------------------------
// Valid files.

#[test]
fn reference_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/webcluster.toml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.source, path);
    assert_eq!(config.groups.len(), 1);
    let web = &config.groups[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.nodes.len(), 3);
    let addrs: Vec<String> = web.nodes.iter().map(|n| n.address.to_string()).collect();
    assert_eq!(
        addrs,
        ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]
    );
    assert!(web.nodes[2].backup);
    assert_eq!(config.default_group, "web");
    assert_eq!(config.server.listen, [addr("127.0.0.1:8080")]);
    assert_eq!(config.routes.len(), 1);
    assert!(!config.summary().is_empty());
}

/// The reference file spells out every default: apart from the values it
/// deliberately changes, it must mean the same as the minimal file.
#[test]
fn reference_config_matches_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/webcluster.toml");
    let reference = load(&path).unwrap_or_else(|e| panic!("{e}"));
    let minimal = ok(MINIMAL);
    assert_eq!(reference.admin, minimal.admin);
    assert_eq!(reference.access_log, minimal.access_log);
    assert_eq!(reference.timeouts, minimal.timeouts);
    assert_eq!(reference.retries, minimal.retries);
    assert_eq!(reference.protected_paths, minimal.protected_paths);
    let (r, m) = (&reference.server, &minimal.server);
    assert_eq!(
        (r.threads, r.grace_period, &r.log_level, &r.pid_file),
        (m.threads, m.grace_period, &m.log_level, &m.pid_file)
    );
    assert_eq!(r.state_file, m.state_file);
    assert_eq!(
        (&r.upgrade_sock, &r.trusted_proxies),
        (&m.upgrade_sock, &m.trusted_proxies)
    );
    let (rg, mg) = (&reference.groups[0], &minimal.groups[0]);
    assert_eq!(
        (
            rg.balance,
            rg.max_fails,
            rg.fail_timeout,
            rg.slow_start,
            rg.scrape
        ),
        (
            mg.balance,
            mg.max_fails,
            mg.fail_timeout,
            mg.slow_start,
            mg.scrape
        )
    );
    assert_eq!(rg.nodes[0], mg.nodes[0]);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn minimal_config_gets_every_default() {
    let c = ok(MINIMAL);
    assert_eq!(c.source, Path::new(FILE));
    assert_eq!(c.server.listen, [addr("0.0.0.0:8080")]);
    assert_eq!(c.server.threads, 1);
    assert_eq!(c.server.grace_period, Duration::from_secs(10));
    assert_eq!(c.server.log_level, "info");
    assert_eq!(c.server.pid_file, None);
    assert_eq!(
        c.server.upgrade_sock,
        Path::new("/tmp/webcluster_upgrade.sock")
    );
    assert!(c.server.trusted_proxies.is_empty());
    assert_eq!(c.server.state_file, None);

    assert_eq!(c.admin.listen, Some(addr("127.0.0.1:8081")));
    assert_eq!(c.admin.token_file, None);
    let allow: Vec<String> = c.admin.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(c.access_log, AccessLog::Off);

    let t = c.timeouts;
    assert_eq!(t.connect, Duration::from_secs(2));
    assert_eq!(t.read, Duration::from_secs(30));
    assert_eq!(t.write, Duration::from_secs(30));
    assert_eq!(t.idle, Duration::from_secs(4));
    assert_eq!(t.client_read, Duration::from_secs(60));
    assert_eq!(t.client_write, Duration::from_secs(60));
    assert_eq!(t.client_keepalive, Duration::from_secs(75));
    assert_eq!(c.retries.tries, 3);
    assert!(c.retries.idempotent_on_error);
    assert_eq!(
        c.protected_paths,
        [
            "/server-status",
            "/server-info",
            "/nginx_status",
            "/stub_status",
            "/balancer-manager"
        ]
    );

    assert_eq!(c.groups.len(), 1);
    let g = &c.groups[0];
    assert_eq!(g.name, "web");
    assert_eq!(g.balance.name(), "busyness");
    assert_eq!(g.max_fails, 1);
    assert_eq!(g.fail_timeout, Duration::from_secs(10));
    assert_eq!(g.slow_start, Duration::ZERO);
    assert!(g.scrape.enabled);
    assert_eq!(g.scrape.interval, Duration::from_secs(1));
    assert_eq!(g.scrape.timeout, Duration::from_secs(1));
    assert_eq!(g.scrape.fall, 3);
    assert_eq!(g.scrape.rise, 2);
    assert_eq!(g.scrape.stale_after, 3);

    let n = &g.nodes[0];
    assert_eq!(n.name, "web1");
    assert_eq!(n.address, addr("127.0.0.1:8001"));
    assert_eq!(n.weight, 1);
    assert!(!n.backup);
    assert!(!n.drain);
    assert_eq!(n.status_kind, StatusKind::Auto);
    assert_eq!(n.max_workers, None);

    assert!(c.routes.is_empty());
    assert_eq!(c.default_group, "web");
    assert_eq!(c.group("web").map(|g| g.nodes.len()), Some(1));
}

#[test]
fn status_url_defaults_to_the_node_address() {
    let c = ok(MINIMAL);
    let s = &c.groups[0].nodes[0].status;
    assert_eq!(s.url, "http://127.0.0.1:8001/server-status?auto");
    assert_eq!(s.address, addr("127.0.0.1:8001"));
    assert_eq!(s.host, "127.0.0.1:8001");
    assert_eq!(s.path_and_query, "/server-status?auto");
}

#[test]
fn explicit_status_url_is_parsed() {
    let c = ok(&format!(
        "{MINIMAL}  status_url = \"http://127.0.0.1/nginx_status\"\n  status_kind = \"nginx\"\n"
    ));
    let n = &c.groups[0].nodes[0];
    assert_eq!(n.status.address, addr("127.0.0.1:80"));
    assert_eq!(n.status.host, "127.0.0.1");
    assert_eq!(n.status.path_and_query, "/nginx_status");
    assert_eq!(n.status_kind.name(), "nginx");
}

#[test]
fn hash_and_source_come_from_the_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("wc.toml");
    std::fs::write(&path, MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.source, path);
    assert_eq!(c.hash.len(), 64);
    assert!(c.hash.chars().all(|ch| matches!(ch, '0'..='9' | 'a'..='f')));
    assert_eq!(c.hash, ok(MINIMAL).hash);
    assert_ne!(c.hash, ok(&format!("# changed\n{MINIMAL}")).hash);
}

#[test]
fn same_node_name_in_different_groups_is_fine() {
    let c = ok(&format!(
        "{MINIMAL}[[group]]\nname = \"api\"\n  [[group.node]]\n  name = \"web1\"\n  address = \"127.0.0.1:8002\"\n"
    ));
    assert_eq!(c.groups.len(), 2);
    assert_eq!(c.groups[1].nodes[0].name, "web1");
    assert_eq!(c.default_group, "web");
}

#[test]
fn settings_are_read() {
    let text = r#"protected_paths = ["/Status/", "/x"]
default_group = "api"
[server]
listen = ["127.0.0.1:9080", "[::1]:9080"]
threads = 4
grace_period = "1m30s"
pid_file = "/run/wc.pid"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7"]
[admin]
listen = "127.0.0.1:9081"
allow = ["0.0.0.0/0"]
[access_log]
target = "/var/log/wc.log"
[timeouts]
connect = "250ms"
[retries]
tries = 1
idempotent_on_error = false
[[group]]
name = "web"
  [[group.node]]
  name = "a"
  address = "127.0.0.1:8001"
[[group]]
name = "api"
balance = "least_inflight"
max_fails = 0
scrape = false
scrape_interval = "500ms"
slow_start = "30s"
  [[group.node]]
  name = "b"
  address = "localhost:8002"
  weight = 0
  [[group.node]]
  name = "c"
  address = "127.0.0.1:8003"
  weight = 5
  backup = true
  drain = true
  max_workers = 150
[[route]]
host = "API.Example.com:8080"
path = "/v1"
group = "api"
[[route]]
host = "*.example.com"
group = "web"
"#;
    let c = ok(text);
    assert_eq!(c.protected_paths, ["/status", "/x"]);
    assert_eq!(c.default_group, "api");
    assert_eq!(
        c.server.listen,
        [addr("127.0.0.1:9080"), addr("[::1]:9080")]
    );
    assert_eq!(c.server.threads, 4);
    assert_eq!(c.server.grace_period, Duration::from_secs(90));
    assert_eq!(c.server.pid_file.as_deref(), Some(Path::new("/run/wc.pid")));
    let trusted: Vec<String> = c
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(trusted, ["10.0.0.0/8", "192.168.1.7/32"]);
    assert_eq!(c.admin.listen, Some(addr("127.0.0.1:9081")));
    assert_eq!(c.access_log, AccessLog::File("/var/log/wc.log".into()));
    assert_eq!(c.timeouts.connect, Duration::from_millis(250));
    assert_eq!(c.retries.tries, 1);
    assert!(!c.retries.idempotent_on_error);
    let api = &c.groups[1];
    assert_eq!(api.balance.name(), "least_inflight");
    assert_eq!(api.max_fails, 0);
    assert!(!api.scrape.enabled);
    assert_eq!(api.scrape.interval, Duration::from_millis(500));
    // The timeout defaults to the interval when that is below 1s.
    assert_eq!(api.scrape.timeout, Duration::from_millis(500));
    assert_eq!(api.slow_start, Duration::from_secs(30));
    assert_eq!(api.nodes[0].address.port(), 8002);
    assert!(api.nodes[0].address.ip().is_loopback());
    assert_eq!(api.nodes[0].status.host, "localhost:8002");
    assert_eq!(api.nodes[0].weight, 0);
    let n = &api.nodes[1];
    assert_eq!(
        (n.weight, n.backup, n.drain, n.max_workers),
        (5, true, true, Some(150))
    );
    assert_eq!(c.routes[0].host.as_deref(), Some("api.example.com"));
    assert_eq!(c.routes[0].path_prefix, "/v1");
    assert_eq!(c.routes[0].group, "api");
    assert_eq!(c.routes[1].host.as_deref(), Some("*.example.com"));
    assert_eq!(c.routes[1].path_prefix, "/");
}

#[test]
fn admin_can_be_disabled() {
    let c = ok(&format!("[admin]\nenabled = false\n{MINIMAL}"));
    assert_eq!(c.admin.listen, None);
    let c = ok(&format!("[admin]\nlisten = \"\"\n{MINIMAL}"));
    assert_eq!(c.admin.listen, None);
}

// ---------------------------------------------------------------------------
// Errors, one kind per test.

#[test]
fn unreadable_file() {
    let e = load(Path::new("/nonexistent/webcluster.toml")).err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.starts_with("/nonexistent/webcluster.toml: cannot read: "),
        "{msg}"
    );
}

#[test]
fn load_reports_the_path_it_was_given() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, format!("{MINIMAL}  weight = -1\n")).unwrap_or_else(|e| panic!("{e}"));
    let msg = load(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.starts_with(&format!("{}:6:", path.display())), "{msg}");
    assert!(msg.contains("key `weight`"), "{msg}");
}

#[test]
fn unknown_key_at_top_level() {
    let text = format!("colour = \"blue\"\n{MINIMAL}");
    let msg = assert_error(&text, 1, "colour", "unknown key");
    assert!(msg.contains("expected one of"), "{msg}");
}

#[test]
fn unknown_key_in_a_section() {
    let text = format!("[server]\nthreds = 2\n{MINIMAL}");
    let msg = assert_error(&text, 2, "threds", "unknown key");
    assert!(msg.contains("[server]"), "{msg}");
    assert!(msg.contains("`threads`"), "{msg}");
}

#[test]
fn unknown_key_in_a_group() {
    let text = format!("{MINIMAL}[[group]]\nname = \"api\"\nbalanse = \"round_robin\"\n");
    let msg = assert_error(&text, line_of(&text, "balanse"), "balanse", "unknown key");
    assert!(msg.contains("group \"api\""), "{msg}");
}

#[test]
fn unknown_key_in_a_node() {
    let text = format!("{MINIMAL}  [[group.node]]\n  name = \"web2\"\n  adress = \"x\"\n");
    let msg = assert_error(&text, line_of(&text, "adress"), "adress", "unknown key");
    assert!(msg.contains("group \"web\" node \"web2\""), "{msg}");
}

#[test]
fn top_level_key_after_a_table_gets_a_hint() {
    let text = format!("{MINIMAL}default_group = \"web\"\n");
    let msg = assert_error(&text, 6, "default_group", "unknown key");
    assert!(msg.contains("top-level key"), "{msg}");
}

#[test]
fn wrong_type() {
    let text = format!("[server]\nthreads = \"four\"\n{MINIMAL}");
    assert_error(&text, 2, "threads", "expected a non-negative integer");
}

#[test]
fn missing_required_key() {
    let text = format!("{MINIMAL}  [[group.node]]\n  name = \"web2\"\n");
    let msg = assert_error(&text, 6, "address", "required");
    assert!(msg.contains("group \"web\" node \"web2\""), "{msg}");
}

#[test]
fn bad_duration() {
    let text = format!("[timeouts]\nconnect = \"2 parsecs\"\n{MINIMAL}");
    let msg = assert_error(&text, 2, "connect", "\"2 parsecs\" is not a valid duration");
    assert!(
        msg.starts_with(&format!("{FILE}:2:11: [timeouts] key `connect`")),
        "{msg}"
    );
    let text = format!("{MINIMAL}fail_timeout = \"10\"\n");
    // A key after the node table belongs to the node: unknown there.
    assert_error(&text, 6, "fail_timeout", "unknown key");
    let text = MINIMAL.replace(
        "name = \"web\"\n",
        "name = \"web\"\nfail_timeout = \"ten\"\n",
    );
    let msg = assert_error(&text, 3, "fail_timeout", "not a valid duration");
    assert!(msg.contains("group \"web\""), "{msg}");
    let text = format!("[timeouts]\nread = \"0s\"\n{MINIMAL}");
    assert_error(&text, 2, "read", "longer than 0s");
}

#[test]
fn bad_address() {
    let text = MINIMAL.replace("127.0.0.1:8001", "10.0.0.x:80");
    let msg = assert_error(
        &text,
        5,
        "address",
        "\"10.0.0.x:80\" is not a valid address",
    );
    assert_eq!(
        msg.split(": \"10.0.0.x:80\"").next(),
        Some(format!("{FILE}:5:13: group \"web\" node \"web1\" key `address`").as_str())
    );
    let text = MINIMAL.replace("127.0.0.1:8001", "127.0.0.1");
    assert_error(&text, 5, "address", "no port");
    let text = format!("[server]\nlisten = [\"0.0.0.0:80\", \"0.0.0.0:http\"]\n{MINIMAL}");
    assert_error(
        &text,
        2,
        "listen",
        "\"0.0.0.0:http\" is not a valid address",
    );
    let text = format!("[admin]\nlisten = \"localhost\"\n{MINIMAL}");
    assert_error(&text, 2, "listen", "no port");
}

#[test]
fn bad_cidr() {
    let text = format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n{MINIMAL}");
    assert_error(
        &text,
        2,
        "trusted_proxies",
        "\"10.0.0.0/33\" is not a valid network",
    );
    let text = format!("[admin]\nallow = [\n  \"127.0.0.1\",\n  \"localhost\",\n]\n{MINIMAL}");
    assert_error(&text, 4, "allow", "\"localhost\" is not a valid network");
}

#[test]
fn duplicate_group_name() {
    let text = format!("{MINIMAL}{MINIMAL}");
    let msg = assert_error(
        &text,
        7,
        "name",
        "group name \"web\" is already used on line 2",
    );
    assert!(msg.contains("group \"web\""), "{msg}");
}

#[test]
fn duplicate_node_name_within_a_group() {
    let text =
        format!("{MINIMAL}  [[group.node]]\n  name = \"web1\"\n  address = \"127.0.0.1:8002\"\n");
    assert_error(
        &text,
        7,
        "name",
        "node name \"web1\" is already used in this group on line 4",
    );
}

#[test]
fn bad_name() {
    let text = MINIMAL.replace("\"web1\"", "\"web 1\"");
    assert_error(&text, 4, "name", "node name \"web 1\" contains ' '");
    let text = MINIMAL.replace("\"web\"", "\"\"");
    assert_error(&text, 2, "name", "group name must not be empty");
}

#[test]
fn empty_group() {
    let text = format!("{MINIMAL}\n[[group]]\nname = \"api\"\nbalance = \"round_robin\"\n");
    let msg = assert_error(&text, 7, "node", "the group has no nodes");
    assert!(msg.contains("group \"api\""), "{msg}");
}

#[test]
fn no_groups_at_all() {
    let msg = err("[server]\nthreads = 2\n").to_string();
    assert!(
        msg.starts_with(&format!("{FILE}: no [[group]] defined")),
        "{msg}"
    );
}

#[test]
fn route_to_a_missing_group() {
    let text = format!("{MINIMAL}[[route]]\nhost = \"example.com\"\ngroup = \"api\"\n");
    let msg = assert_error(&text, 8, "group", "there is no group named \"api\"");
    assert!(msg.contains("route #1"), "{msg}");
}

#[test]
fn bad_route_host_and_path() {
    let text = format!("{MINIMAL}[[route]]\nhost = \"exa mple.com\"\ngroup = \"web\"\n");
    assert_error(&text, 7, "host", "not a valid host");
    let text = format!("{MINIMAL}[[route]]\npath = \"api\"\ngroup = \"web\"\n");
    assert_error(&text, 7, "path", "must start with \"/\"");
}

#[test]
fn default_group_missing() {
    let text = format!("default_group = \"api\"\n{MINIMAL}");
    let msg = assert_error(&text, 1, "default_group", "there is no group named \"api\"");
    assert!(
        msg.starts_with(&format!("{FILE}:1:17: key `default_group`")),
        "{msg}"
    );
}

#[test]
fn weight_zero_on_every_node() {
    let text = format!(
        "{MINIMAL}  weight = 0\n  [[group.node]]\n  name = \"web2\"\n  address = \"127.0.0.1:8002\"\n  weight = 0\n"
    );
    let msg = assert_error(&text, 1, "weight", "every node of the group has weight 0");
    assert!(msg.contains("group \"web\""), "{msg}");
    // One node above 0 is enough.
    ok(&format!(
        "{MINIMAL}  weight = 0\n  [[group.node]]\n  name = \"web2\"\n  address = \"127.0.0.1:8002\"\n"
    ));
}

#[test]
fn weight_too_large() {
    let text = format!("{MINIMAL}  weight = 100000\n");
    assert_error(&text, 6, "weight", "at most 10000");
}

#[test]
fn bad_status_url() {
    let text = format!("{MINIMAL}  status_url = \"https://127.0.0.1/server-status?auto\"\n");
    assert_error(
        &text,
        6,
        "status_url",
        "https status URLs are not supported",
    );
    let text = format!("{MINIMAL}  status_url = \"/server-status\"\n");
    assert_error(&text, 6, "status_url", "not an absolute URL");
    let text = format!("{MINIMAL}  status_url = \"http://127.0.0.1:99999/\"\n");
    assert_error(&text, 6, "status_url", "port \"99999\" is not a number");
    let text = format!("{MINIMAL}  status_url = \"http://not a url/\"\n");
    assert_error(&text, 6, "status_url", "not a valid URL");
}

#[test]
fn bad_status_kind() {
    let text = format!("{MINIMAL}  status_kind = \"iis\"\n");
    assert_error(&text, 6, "status_kind", "unknown status kind \"iis\"");
}

#[test]
fn bad_balance_method() {
    let text = MINIMAL.replace("name = \"web\"\n", "name = \"web\"\nbalance = \"random\"\n");
    let msg = assert_error(&text, 3, "balance", "unknown balance method \"random\"");
    assert!(msg.contains("round_robin"), "{msg}");
}

#[test]
fn tries_zero() {
    let text = format!("[retries]\ntries = 0\n{MINIMAL}");
    let msg = assert_error(&text, 2, "tries", "must be at least 1");
    assert!(msg.contains("[retries]"), "{msg}");
}

#[test]
fn threads_zero() {
    let text = format!("[server]\nthreads = 0\n{MINIMAL}");
    assert_error(&text, 2, "threads", "must be at least 1");
}

#[test]
fn bad_cpu_affinity() {
    for (value, what) in [
        ("\"on\"", "\"on\" is not a CPU number"),
        ("\"3-1\"", "the range 3-1 runs backwards"),
        ("\"0,4096\"", "CPU 4096 is past the last one"),
        ("\"\"", "must not be empty"),
    ] {
        let text = format!("[server]\nthreads = 2\ncpu_affinity = {value}\n{MINIMAL}");
        assert_error(&text, 3, "cpu_affinity", what);
    }
}

#[test]
fn fall_or_rise_zero() {
    for key in ["fall", "rise", "stale_after"] {
        let text = MINIMAL.replace("name = \"web\"\n", &format!("name = \"web\"\n{key} = 0\n"));
        assert_error(&text, 3, key, "must be at least 1");
    }
}

#[test]
fn scrape_timeout_longer_than_interval() {
    let text = MINIMAL.replace(
        "name = \"web\"\n",
        "name = \"web\"\nscrape_interval = \"1s\"\nscrape_timeout = \"2s\"\n",
    );
    assert_error(&text, 4, "scrape_timeout", "longer than scrape_interval");
}

#[test]
fn bad_protected_path() {
    let text = format!("protected_paths = [\"/ok\", \"server-status\"]\n{MINIMAL}");
    assert_error(&text, 1, "protected_paths", "must start with \"/\"");
}

#[test]
fn admin_listener_clashes_with_proxy_listener() {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\n{MINIMAL}"
    );
    assert_error(&text, 4, "listen", "already a proxy listener");
}

#[test]
fn toml_syntax_error() {
    let text = format!("[server]\nthreads = 2\ngrace_period = \"10s\n{MINIMAL}");
    let msg = assert_error(&text, 3, "grace_period", "string");
    assert!(msg.contains("[server]"), "{msg}");
    let text = format!("{MINIMAL}[[group.node]\n");
    let msg = err(&text).to_string();
    assert!(msg.starts_with(&format!("{FILE}:6:")), "{msg}");
}

#[test]
fn duplicate_key_is_a_syntax_error_naming_the_key() {
    let text = format!("[server]\nthreads = 2\nthreads = 3\n{MINIMAL}");
    assert_error(&text, 3, "threads", "duplicate key");
}

// ---------------------------------------------------------------------------
// Session affinity and content sync (issue 7).

#[test]
fn affinity_and_route_sync_defaults() {
    let c = ok(&format!("{MINIMAL}[[route]]\ngroup = \"web\"\n"));
    let a = &c.groups[0].affinity;
    assert_eq!(a.mode, AffinityMode::Off);
    assert_eq!(
        a.cookies,
        [
            "PHPSESSID",
            "JSESSIONID",
            "ASP.NET_SessionId",
            "laravel_session",
            "sessionid"
        ]
    );
    assert_eq!(a.insert_cookie, "WCNODE");
    assert!(!a.strict);
    let r = &c.routes[0];
    assert!(!r.retry_on_404);
    assert_eq!(r.primary, None);
    assert!(r.write_paths.is_empty());
    assert!(!r.primary_fallback);

    // The reference file spells out the same defaults.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/webcluster.toml");
    let reference = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reference.groups[0].affinity, *a);
    let rr = &reference.routes[0];
    assert_eq!(
        (
            rr.retry_on_404,
            &rr.primary,
            &rr.write_paths,
            rr.primary_fallback
        ),
        (false, &None, &Vec::new(), false)
    );
}

#[test]
fn affinity_and_route_sync_settings_are_read() {
    let text = r#"[[group]]
name = "web"
affinity = "insert"
affinity_cookies = ["PHPSESSID", "BITRIX_SM_LOGIN", "PHPSESSID"]
affinity_insert_cookie = "SRV"
affinity_strict = true
  [[group.node]]
  name = "web1"
  address = "127.0.0.1:8001"
  [[group.node]]
  name = "web2"
  address = "127.0.0.1:8002"

[[route]]
path = "/upload/"
group = "web"
retry_on_404 = true
primary = "web2"
write_paths = ["/bitrix/admin/", "/upload/tmp/"]
primary_fallback = true
"#;
    let c = ok(text);
    let a = &c.groups[0].affinity;
    assert_eq!(a.mode, AffinityMode::Insert);
    assert_eq!(a.cookies, ["PHPSESSID", "BITRIX_SM_LOGIN"]);
    assert_eq!(a.insert_cookie, "SRV");
    assert!(a.strict);
    let r = &c.routes[0];
    assert!(r.retry_on_404);
    assert_eq!(r.primary.as_deref(), Some("web2"));
    assert_eq!(r.write_paths, ["/bitrix/admin/", "/upload/tmp/"]);
    assert!(r.primary_fallback);
    let c = ok(&text.replace("\"insert\"", "\"cookie\""));
    assert_eq!(c.groups[0].affinity.mode, AffinityMode::Cookie);
}

#[test]
fn bad_affinity_mode() {
    let text = MINIMAL.replace(
        "name = \"web\"\n",
        "name = \"web\"\naffinity = \"sticky\"\n",
    );
    let msg = assert_error(&text, 3, "affinity", "unknown affinity mode \"sticky\"");
    assert!(msg.contains("group \"web\""), "{msg}");
}

#[test]
fn bad_affinity_cookie_names() {
    let text = MINIMAL.replace(
        "name = \"web\"\n",
        "name = \"web\"\naffinity = \"cookie\"\naffinity_cookies = [\"PHPSESSID\", \"my session\"]\n",
    );
    assert_error(&text, 4, "affinity_cookies", "not a valid cookie name");
    let text = MINIMAL.replace(
        "name = \"web\"\n",
        "name = \"web\"\naffinity_cookies = []\n",
    );
    assert_error(&text, 3, "affinity_cookies", "at least one cookie name");
    let text = MINIMAL.replace(
        "name = \"web\"\n",
        "name = \"web\"\naffinity_insert_cookie = \"a=b\"\n",
    );
    assert_error(
        &text,
        3,
        "affinity_insert_cookie",
        "not a valid cookie name",
    );
}

#[test]
fn route_primary_must_be_a_node_of_the_group() {
    let text = format!("{MINIMAL}[[route]]\ngroup = \"web\"\nprimary = \"web9\"\n");
    let msg = assert_error(
        &text,
        line_of(&text, "web9"),
        "primary",
        "there is no node named \"web9\" in group \"web\"",
    );
    assert!(msg.contains("route #1"), "{msg}");
    // A node of another group does not count.
    let text = format!(
        "{MINIMAL}[[group]]\nname = \"static\"\n  [[group.node]]\n  name = \"s1\"\n  address = \"127.0.0.1:8009\"\n[[route]]\ngroup = \"web\"\nprimary = \"s1\"\n"
    );
    assert_error(
        &text,
        line_of(&text, "primary = "),
        "primary",
        "no node named \"s1\" in group \"web\"",
    );
}

#[test]
fn write_paths_and_fallback_need_a_primary() {
    let text = format!("{MINIMAL}[[route]]\ngroup = \"web\"\nwrite_paths = [\"/admin/\"]\n");
    assert_error(
        &text,
        line_of(&text, "write_paths"),
        "write_paths",
        "set `primary` too",
    );
    let text = format!(
        "{MINIMAL}[[route]]\ngroup = \"web\"\nprimary = \"web1\"\nwrite_paths = [\"admin/\"]\n"
    );
    assert_error(
        &text,
        line_of(&text, "write_paths"),
        "write_paths",
        "must start with \"/\"",
    );
    let text = format!("{MINIMAL}[[route]]\ngroup = \"web\"\nprimary_fallback = true\n");
    assert_error(
        &text,
        line_of(&text, "primary_fallback"),
        "primary_fallback",
        "has no effect without `primary`",
    );
}

#[test]
fn upstream_keepalive_values_and_error() {
    let ok = |v: &str| {
        webcluster::config::parse(
            &format!("[[group]]\nname = \"web\"\nupstream_keepalive = \"{v}\"\n  [[group.node]]\n  name = \"a\"\n  address = \"127.0.0.1:80\"\n"),
            std::path::Path::new("k.toml"),
        )
    };
    use webcluster::config::UpstreamKeepalive;
    assert_eq!(
        ok("on").expect("on").groups[0].upstream_keepalive,
        UpstreamKeepalive::On
    );
    assert_eq!(
        ok("off").expect("off").groups[0].upstream_keepalive,
        UpstreamKeepalive::Off
    );
    assert_eq!(
        ok("auto").expect("auto").groups[0].upstream_keepalive,
        UpstreamKeepalive::Auto
    );
    let e = ok("sometimes").expect_err("bad value").to_string();
    assert!(e.starts_with("k.toml:3:"), "{e}");
    assert!(e.contains("upstream_keepalive"), "{e}");
}

#[test]
fn node_control_files_are_read_as_paths() {
    let text = MINIMAL.replacen(
        "[[group]]",
        "[server]\nstate_file = \"/var/lib/webcluster/state.json\"\n[admin]\ntoken_file = \"/etc/webcluster/admin.token\"\n\n[[group]]",
        1,
    );
    let c = ok(&text);
    assert_eq!(
        c.server.state_file.as_deref(),
        Some(Path::new("/var/lib/webcluster/state.json"))
    );
    assert_eq!(
        c.admin.token_file.as_deref(),
        Some(Path::new("/etc/webcluster/admin.token"))
    );
}

// ---------------------------------------------------------------------------
// Nodes from DNS ([discovery], srv, host names)

#[test]
fn discovery_defaults_and_host_name_nodes() {
    let c = ok(MINIMAL);
    assert_eq!(c.discovery.min_ttl, Duration::from_secs(1));
    assert_eq!(c.discovery.max_ttl, Duration::from_secs(300));
    assert!(c.discovery.nameservers.is_empty());
    assert!(c.groups[0].srv.is_none());
    // With name servers of its own, a host name is not resolved at load:
    // the node waits for its first answer.
    let c = ok(
        "[discovery]\nnameservers = [\"127.0.0.1:5353\", \"10.0.0.2\"]\n\
                [[group]]\nname = \"web\"\nsrv = \"_http._tcp.web.service.consul\"\n\
                [[group.node]]\nname = \"a\"\naddress = \"a.web.internal:8080\"\n",
    );
    assert_eq!(
        c.discovery.nameservers,
        [addr("127.0.0.1:5353"), addr("10.0.0.2:53")]
    );
    let node = &c.groups[0].nodes[0];
    assert_eq!(node.host.as_deref(), Some("a.web.internal"));
    assert!(node.address.ip().is_unspecified());
    assert_eq!(node.status.host, "a.web.internal:8080");
    assert_eq!(
        c.groups[0].srv.as_ref().map(|s| s.name.as_str()),
        Some("_http._tcp.web.service.consul")
    );
    // A group may have only its SRV name.
    ok("[[group]]\nname = \"web\"\nsrv = \"_http._tcp.web\"\n");
}

#[test]
fn discovery_errors_name_line_and_key() {
    assert_error(
        &format!("[discovery]\nnameservers = [\"dns.local\"]\n{MINIMAL}"),
        2,
        "nameservers",
        "not an IP address",
    );
    assert_error(
        &format!("[discovery]\nmin_ttl = \"10s\"\nmax_ttl = \"5s\"\n{MINIMAL}"),
        3,
        "max_ttl",
        "shorter than min_ttl",
    );
    assert_error(
        "[[group]]\nname = \"web\"\nsrv = \"bad name!\"\n",
        3,
        "srv",
        "neither an IP address nor a host name",
    );
    assert_error(
        "[discovery]\nnameservers = [\"127.0.0.1:5353\"]\n[[group]]\nname = \"web\"\n\
         [[group.node]]\nname = \"a\"\naddress = \"bad host!:80\"\n",
        7,
        "address",
        "neither an IP address nor a host name",
    );
    assert_error(
        "[[group]]\nname = \"web\"\nsrv = \"_http._tcp.web\"\nsrv_status_path = \"nginx_status\"\n",
        4,
        "srv_status_path",
        "is not a path",
    );
    assert_error(
        "[[group]]\nname = \"web\"\nsrv = \"_http._tcp.web\"\nsrv_status_kind = \"lighttpd\"\n",
        4,
        "srv_status_kind",
        "unknown status kind",
    );
    assert_error(
        "[[group]]\nname = \"web\"\nsrv = \"_http._tcp.web\"\nsrv_max_workers = 0\n",
        4,
        "srv_max_workers",
        "at least 1",
    );
    assert_error(
        "[[group]]\nname = \"web\"\nsrv_status_kind = \"nginx\"\n\
         [[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:80\"\n",
        3,
        "srv_status_kind",
        "set `srv` too",
    );
}

// ---------------------------------------------------------------------------
// TLS listeners and the routes' HTTPS keys.

/// A self-signed certificate for `a.test` in `dir`: (chain, key) paths.
fn certificate_files(dir: &Path) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let (chain, key_path) = (dir.join("a.pem"), dir.join("a.key"));
    std::fs::write(&chain, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (chain.display().to_string(), key_path.display().to_string())
}

#[test]
fn tls_defaults_and_route_https_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (chain, key) = certificate_files(dir.path());
    let text = format!(
        "{MINIMAL}\n[[tls]]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{{ chain = \"{chain}\", key = \"{key}\" }}]\n\n\
         [[route]]\ngroup = \"web\"\nhttps_redirect = true\nhsts_max_age = \"365d\"\n"
    );
    let c = ok(&text);
    let t = &c.tls[0];
    assert_eq!(t.listen, [addr("127.0.0.1:8443")]);
    assert_eq!(t.min_version, webcluster::config::TlsVersion::Tls12);
    assert!(t.http2 && t.session_tickets);
    assert_eq!(t.session_cache, 20_000);
    assert_eq!(t.certificates[0].names, ["a.test"]);
    let r = &c.routes[0];
    assert!(r.https_redirect);
    let hsts = r.hsts.as_ref().expect("hsts");
    assert_eq!(hsts.header_value(), "max-age=31536000");
    // Off by default.
    let plain = ok(&format!("{MINIMAL}\n[[route]]\ngroup = \"web\"\n"));
    assert!(plain.tls.is_empty());
    assert!(!plain.routes[0].https_redirect && plain.routes[0].hsts.is_none());
    // Relative paths are from the config file's directory.
    let rel = format!(
        "{MINIMAL}\n[[tls]]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{{ chain = \"a.pem\", key = \"a.key\" }}]\n"
    );
    let c = parse(&rel, &dir.path().join("webcluster.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.tls[0].certificates[0].chain_file,
        dir.path().join("a.pem")
    );
}

#[test]
fn tls_and_https_key_errors_name_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (chain, key) = certificate_files(dir.path());
    let tls = |extra: &str| {
        format!(
            "{MINIMAL}\n[[tls]]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{{ chain = \"{chain}\", key = \"{key}\" }}]\n{extra}\n"
        )
    };
    let text = tls("min_version = \"1.0\"");
    assert_error(
        &text,
        line_of(&text, "min_version"),
        "min_version",
        "RFC 8996",
    );
    let text = tls("min_version = \"2\"");
    assert_error(
        &text,
        line_of(&text, "min_version"),
        "min_version",
        "not a TLS version",
    );
    let text = tls("session_cache = 2000000");
    assert_error(
        &text,
        line_of(&text, "session_cache"),
        "session_cache",
        "at most",
    );
    let text = format!("{MINIMAL}\n[[tls]]\nlisten = []\ncertificates = []\n");
    assert_error(
        &text,
        line_of(&text, "listen = []"),
        "listen",
        "at least one",
    );
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:9000\"\n{}",
        tls("").replace("127.0.0.1:8443", "127.0.0.1:9000")
    );
    assert_error(
        &text,
        line_of(&text, "[\"127.0.0.1:9000\"]"),
        "listen",
        "admin listener",
    );
    let text = format!(
        "{}{}",
        tls(""),
        "[[tls]]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = []\n"
    );
    let second = text.rfind("listen = [\"127.0.0.1:8443\"]").expect("second");
    let line = text[..second].lines().count() + 1;
    assert_error(&text, line, "listen", "already a TLS listener");
    let text = format!("{MINIMAL}\n[[route]]\ngroup = \"web\"\nhsts_include_subdomains = true\n");
    assert_error(
        &text,
        line_of(&text, "hsts_include_subdomains"),
        "hsts_include_subdomains",
        "hsts_max_age",
    );
    let text = format!("{MINIMAL}\n[[route]]\ngroup = \"web\"\nhsts_max_age = \"a year\"\n");
    assert_error(&text, line_of(&text, "hsts_max_age"), "hsts_max_age", "");
}

#[test]
fn queue_settings_are_read_and_default_to_the_connect_timeout() {
    let c = ok(MINIMAL);
    let g = &c.groups[0];
    assert_eq!((g.queue_timeout, g.max_queue), (None, 0));
    assert_eq!(g.queue_order, QueueOrder::Adaptive);
    assert_eq!(g.nodes[0].max_conns, None);
    let text = r#"[[group]]
name = "web"
queue_timeout = "1500ms"
max_queue = 200
queue_order = "fifo"
  [[group.node]]
  name = "web1"
  address = "127.0.0.1:8001"
  max_conns = 32
"#;
    let c = ok(text);
    let g = &c.groups[0];
    assert_eq!(g.queue_timeout, Some(Duration::from_millis(1500)));
    assert_eq!(g.max_queue, 200);
    assert_eq!(g.queue_order, QueueOrder::Fifo);
    assert_eq!(g.nodes[0].max_conns, Some(32));
    let summary = c.summary();
    assert!(
        summary.contains("queue timeout 1s 500ms")
            && summary.contains("queue order fifo")
            && summary.contains("max_conns 32"),
        "{summary}"
    );
}

#[test]
fn bad_queue_settings_name_their_line_and_key() {
    let text = "[[group]]\nname = \"web\"\nqueue_timeout = \"0s\"\n  [[group.node]]\n  name = \"a\"\n  address = \"127.0.0.1:8001\"\n";
    assert_error(text, 3, "queue_timeout", "must be longer than 0s");
    let text = "[[group]]\nname = \"web\"\nqueue_timeout = \"soon\"\n  [[group.node]]\n  name = \"a\"\n  address = \"127.0.0.1:8001\"\n";
    assert_error(text, 3, "queue_timeout", "not a valid duration");
    let text = "[[group]]\nname = \"web\"\nqueue_order = \"lifo\"\n  [[group.node]]\n  name = \"a\"\n  address = \"127.0.0.1:8001\"\n";
    assert_error(text, 3, "queue_order", "expected \"adaptive\" or \"fifo\"");
    let text = "[[group]]\nname = \"web\"\n  [[group.node]]\n  name = \"a\"\n  address = \"127.0.0.1:8001\"\n  max_conns = 0\n";
    assert_error(text, 6, "max_conns", "at least 1");
    let text = "[[group]]\nname = \"web\"\nmax_queue = -1\n  [[group.node]]\n  name = \"a\"\n  address = \"127.0.0.1:8001\"\n";
    let e = err(text);
    assert_eq!(e.line(), Some(3), "{e}");
}
