//! The "Nodes from DNS" table of the status page: per name resolved by
//! `crate::discovery`, its groups, last answer, last success and the error
//! of the last lookup if it failed (the last good answer still serves).

use maud::{html, Markup};

use crate::discovery::DnsStatus;

/// Nothing when no name is resolved.
pub fn section(dns: &[DnsStatus], now_unix: f64) -> Markup {
    if dns.is_empty() {
        return html! {};
    }
    let ago = |t: Option<f64>| match t {
        None => "never".to_owned(),
        Some(t) => format!("{:.0} s ago", (now_unix - t).max(0.0)),
    };
    html! {
        section.group {
            h2 { "Nodes from DNS" }
            table {
                thead { tr {
                    th { "name" } th { "kind" } th { "groups" } th { "answer" }
                    th { "last success" } th { "lookups ok / failed" } th { "last error" }
                } }
                tbody {
                    @for d in dns {
                        tr {
                            td.mono { (d.name) }
                            td { (d.kind) }
                            td { (d.groups.join(", ")) }
                            td.mono {
                                @if d.answer.is_empty() { "none yet" }
                                @for (i, a) in d.answer.iter().enumerate() {
                                    @if i > 0 { br; }
                                    (a)
                                }
                            }
                            td { (ago(d.last_ok_unix)) }
                            td { (d.resolutions_ok) " / " (d.resolutions_failed) }
                            td.mono {
                                @match &d.last_error {
                                    Some(e) => { span.bad { (e) } " (keeping the last answer)" }
                                    None => { "-" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_answers_and_errors_are_shown_escaped() {
        let d = DnsStatus {
            groups: vec!["web".to_owned()],
            kind: "srv",
            name: "_http._tcp.web.test".to_owned(),
            answer: vec!["a.web.test:80 (127.0.0.1, priority 10, weight 1)".to_owned()],
            last_ok_unix: Some(90.0),
            last_try_unix: Some(99.0),
            last_error: Some("no connections <available>".to_owned()),
            resolutions_ok: 3,
            resolutions_failed: 2,
        };
        let page = section(&[d], 100.0).into_string();
        assert!(page.contains("_http._tcp.web.test"), "{page}");
        assert!(page.contains("10 s ago"), "{page}");
        assert!(page.contains("no connections &lt;available&gt;"), "{page}");
        assert!(page.contains("3 / 2"), "{page}");
        assert!(section(&[], 0.0).into_string().is_empty());
    }
}
