//! Runtime control of nodes (issue #18) against the real binary and real
//! Apache nodes: `webcluster node drain|maint|ready|weight|list` and the
//! admin API (`/api/nodes`), refused without the token or with a wrong one;
//! a drained node gets no new request while its in-flight one finishes, a
//! node in maintenance none at all, weight 0 none; the states kept over a
//! SIGHUP reload and, with `[server] state_file`, over a restart (a garbled
//! state file is ignored with a warning). Requests are counted by the
//! proxy's per-node `proxied_total`.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::webcluster::{base_config, binary, group_config, node, reload_counts, Webcluster};
use support::{http_get, http_request, ApacheNode, ApacheOpts};

const TOKEN: &str = "tok-8c1f2e";

fn config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    secrets: &Path,
    nodes: &[(&str, std::net::SocketAddr, &str)],
) -> String {
    let state = secrets.join("state.json");
    let token = secrets.join("admin.token");
    base_config(
        listen,
        admin,
        &format!("state_file = {:?}", state.display().to_string()),
    )
    .replace(
        "[admin]\n",
        &format!("[admin]\ntoken_file = {:?}\n", token.display().to_string()),
    ) + &group_config("web", "", nodes)
}

/// `webcluster node <args> -c <config>`.
fn cli(wc: &Webcluster, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("node")
        .args(args)
        .arg("-c")
        .arg(&wc.config_path)
        .output()
        .expect("run webcluster node")
}

fn cli_ok(wc: &Webcluster, args: &[&str]) -> String {
    let out = cli(wc, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "webcluster node {args:?}: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn api(wc: &Webcluster, method: &str, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let r = http_request(wc.admin, method, path, &headers, b"").expect("admin API request");
    let json = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, json)
}

fn proxied(wc: &Webcluster, name: &str) -> u64 {
    node(&wc.status(), name)["proxied_total"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Send `n` requests through the proxy; all must be answered 200.
fn send(wc: &Webcluster, n: usize) {
    for _ in 0..n {
        let r = http_get(wc.listen, "/", &[]).expect("request through the proxy");
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn op_state(wc: &Webcluster, name: &str) -> serde_json::Value {
    node(&wc.status(), name)["operator_state"].clone()
}

#[test]
fn nodes_are_drained_maintained_and_reweighted_by_cli_and_api() {
    let n1 = ApacheNode::start(ApacheOpts::prefork("ctl1", 4));
    let n2 = ApacheNode::start(ApacheOpts::prefork("ctl2", 4));
    let (a1, a2) = (n1.addr(), n2.addr());
    let secrets = tempfile::tempdir().expect("temp dir");
    std::fs::write(secrets.path().join("admin.token"), format!("{TOKEN}\n")).expect("token");
    let sp = secrets.path().to_owned();
    let wc = Webcluster::start(|l, a| config(l, a, &sp, &[("ctl1", a1, ""), ("ctl2", a2, "")]));
    wc.wait_all_up();

    // Refused without the token and with a wrong one; nothing changes.
    let (code, body) = api(&wc, "POST", "/api/nodes/web/ctl2/drain", None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = api(&wc, "POST", "/api/nodes/web/ctl2/maint", Some("wrong"));
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["error"], "wrong token");
    assert_eq!(op_state(&wc, "ctl2"), "ready");
    assert!(wc
        .log()
        .contains("node control request for web/ctl2 refused"));
    // Unknown node, bad value.
    let (code, body) = api(&wc, "POST", "/api/nodes/web/nope/drain", Some(TOKEN));
    assert_eq!(code, 404, "{body}");
    let (code, body) = api(
        &wc,
        "POST",
        "/api/nodes/web/ctl2/weight?value=99999",
        Some(TOKEN),
    );
    assert_eq!(code, 400, "{body}");
    let out = cli(&wc, &["weight", "web/ctl2", "lots"]);
    assert!(!out.status.success());
    let out = cli(&wc, &["drain", "web/nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // In flight on ctl2 (ctl1 in maintenance meanwhile), then ctl2 drained:
    // the request finishes, new ones all go to ctl1.
    cli_ok(&wc, &["maint", "web/ctl1"]);
    let slow = {
        let listen = wc.listen;
        thread::spawn(move || http_get(listen, "/sleep?ms=1500", &[]))
    };
    wc.wait_status("the slow request in flight on ctl2", |s| {
        node(s, "ctl2")["inflight"].as_u64() == Some(1)
    });
    cli_ok(&wc, &["ready", "web/ctl1"]);
    let out = cli_ok(&wc, &["drain", "web/ctl2"]);
    assert!(
        out.contains("web/ctl2  drain") && out.contains("was ready"),
        "{out}"
    );
    assert!(wc
        .log()
        .contains("node web/ctl2 set to drain by the admin API (was ready)"));
    let before = proxied(&wc, "ctl2");
    send(&wc, 20);
    let r = slow
        .join()
        .expect("slow thread")
        .expect("the in-flight request");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        proxied(&wc, "ctl2"),
        before,
        "a drained node got a new request"
    );
    let s = wc.status();
    assert_eq!(node(&s, "ctl2")["state"], "draining");
    assert_eq!(node(&s, "ctl2")["operator_state"], "drain");
    let page = http_get(wc.admin, "/", &[]).expect("status page").body;
    assert!(page.contains(">DRAIN<"), "no DRAIN badge");
    let metrics = http_get(wc.admin, "/metrics", &[]).expect("metrics").body;
    assert!(metrics
        .contains("webcluster_node_operator_state{group=\"web\",node=\"ctl2\",state=\"drain\"} 1"));

    // Maintenance: no request at all.
    cli_ok(&wc, &["maint", "web/ctl2"]);
    let before = proxied(&wc, "ctl2");
    send(&wc, 20);
    assert_eq!(
        proxied(&wc, "ctl2"),
        before,
        "a node in maintenance got a request"
    );
    assert_eq!(
        node(&wc.status(), "ctl2")["down_reason"],
        "in maintenance (set by the operator)"
    );

    // Ready again: it takes requests; weight 0 through the API: none.
    cli_ok(&wc, &["ready", "web/ctl2"]);
    wc.wait_status("ctl2 usable again", |s| node(s, "ctl2")["state"] == "up");
    let (code, body) = api(
        &wc,
        "POST",
        "/api/nodes/web/ctl2/weight?value=0",
        Some(TOKEN),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["weight"], 0);
    let before = proxied(&wc, "ctl2");
    send(&wc, 20);
    assert_eq!(
        proxied(&wc, "ctl2"),
        before,
        "a node of weight 0 got a request"
    );
    let out = cli_ok(&wc, &["weight", "web/ctl2", "reset"]);
    assert!(
        out.contains("weight 1") && out.contains("was ready, weight 0"),
        "{out}"
    );
    let before = proxied(&wc, "ctl2");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while proxied(&wc, "ctl2") == before {
        assert!(
            std::time::Instant::now() < deadline,
            "ctl2 never got a request back"
        );
        send(&wc, 5);
    }

    // The listing.
    cli_ok(&wc, &["weight", "web/ctl1", "7"]);
    let list = cli_ok(&wc, &["list"]);
    assert!(
        list.contains("web/ctl1  ready  weight 7 (config 1)"),
        "{list}"
    );
    assert!(list.contains("web/ctl2  ready  weight 1"), "{list}");
    let (code, body) = api(&wc, "GET", "/api/nodes", None);
    assert_eq!(code, 200);
    assert_eq!(body["nodes"][0]["weight"], 7);
}

#[test]
fn states_outlive_a_reload_and_a_restart_with_the_state_file() {
    let n1 = ApacheNode::start(ApacheOpts::prefork("ctl3", 2));
    let n2 = ApacheNode::start(ApacheOpts::prefork("ctl4", 2));
    let (a1, a2) = (n1.addr(), n2.addr());
    let secrets = tempfile::tempdir().expect("temp dir");
    // The token file named in the config is not there yet: refused.
    let sp = secrets.path().to_owned();
    let mut wc = Webcluster::start(|l, a| config(l, a, &sp, &[("ctl3", a1, ""), ("ctl4", a2, "")]));
    wc.wait_all_up();
    let (code, body) = api(&wc, "POST", "/api/nodes/web/ctl4/drain", Some(TOKEN));
    assert_eq!(code, 500, "an unreadable token file: {body}");
    let out = cli(&wc, &["drain", "web/ctl4"]);
    assert!(!out.status.success());
    std::fs::write(secrets.path().join("admin.token"), TOKEN).expect("token");

    cli_ok(&wc, &["drain", "web/ctl4"]);
    cli_ok(&wc, &["weight", "web/ctl3", "3"]);
    let state_file = secrets.path().join("state.json");
    let saved = std::fs::read_to_string(&state_file).expect("the state file is written");
    assert!(saved.contains("\"drain\""), "{saved}");

    // SIGHUP with a changed config (ctl3's configured weight): kept.
    let text = std::fs::read_to_string(&wc.config_path).expect("config");
    let changed = text.replacen(
        &format!("address = \"{a1}\"\n"),
        &format!("address = \"{a1}\"\n  weight = 2\n"),
        1,
    );
    assert_ne!(changed, text);
    let s = wc.reload_with(&changed);
    assert_eq!(reload_counts(&s), (1, 0), "the reload: {s:#}");
    assert_eq!(node(&s, "ctl4")["operator_state"], "drain");
    assert_eq!(node(&s, "ctl3")["operator_weight"], 3);
    assert_eq!(node(&s, "ctl3")["weight"], 2);

    // Restart: restored from the state file.
    wc.signal(Signal::SIGTERM);
    assert!(
        wc.wait_exit(Duration::from_secs(20)).is_some(),
        "did not stop"
    );
    wc.spawn(&[]);
    let s = wc.status();
    assert_eq!(node(&s, "ctl4")["operator_state"], "drain");
    assert_eq!(node(&s, "ctl3")["operator_weight"], 3);
    assert!(wc
        .log()
        .contains("node web/ctl4 set to drain from the state file"));

    // A garbled state file: a warning, every node as the config says.
    wc.signal(Signal::SIGTERM);
    assert!(
        wc.wait_exit(Duration::from_secs(20)).is_some(),
        "did not stop"
    );
    std::fs::write(&state_file, "{\"version\": 1, \"nodes\": [garbage").expect("garble");
    wc.spawn(&[]);
    let s = wc.status();
    assert_eq!(node(&s, "ctl4")["operator_state"], "ready");
    assert_eq!(node(&s, "ctl3")["operator_weight"], serde_json::Value::Null);
    assert!(
        wc.log().contains("is not a webcluster state file"),
        "{}",
        wc.log()
    );
}
