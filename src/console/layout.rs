//! The frame every console page shares (header, navigation, the signed-in user, sign-out) and
//! the small formatting helpers of its cells. Every value reaches the page through `maud`,
//! which escapes HTML, and text recorded from clients goes through `printable` first, so
//! control characters and bidi overrides show as escapes, as in the CLI.

use maud::{html, Markup, DOCTYPE};

use super::auth::Viewer;

/// Which page the navigation marks as current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    None,
    AuditKubectl,
    Insights,
    Access,
    Shell,
}

pub fn page(title: &str, viewer: Option<&Viewer>, nav: Nav, content: Markup) -> Markup {
    page_with(title, viewer, nav, &[], content)
}

/// `page` with more of the console's assets (`.css` styles, `.js` scripts) in its head.
pub fn page_with(
    title: &str,
    viewer: Option<&Viewer>,
    nav: Nav,
    assets: &[&str],
    content: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(v) = viewer {
                    meta name="csrf-token" content=(v.csrf);
                }
                title { (title) " · ztk" }
                link rel="icon" href="/assets/icon.svg" type="image/svg+xml";
                link rel="stylesheet" href=(super::assets::url("console.css"));
                script src=(super::assets::url("console.js")) defer {}
                @for name in assets {
                    @if name.ends_with(".css") {
                        link rel="stylesheet" href=(super::assets::url(name));
                    } @else {
                        script src=(super::assets::url(name)) defer {}
                    }
                }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" aria-label="ztk home" {
                        img src="/assets/icon.svg" alt="" width="24" height="24";
                        span { "ztk" }
                    }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            ul {
                                li.group { span { "System" } }
                                li {
                                    a href="/audit/kubectl" aria-current=[current(nav, Nav::AuditKubectl)] {
                                        "Audit Logs › KubeCTL"
                                    }
                                }
                                li {
                                    a href="/audit/insights" aria-current=[current(nav, Nav::Insights)] {
                                        "Latency and activity"
                                    }
                                }
                                li {
                                    a href="/access" aria-current=[current(nav, Nav::Access)] {
                                        "Who can do what"
                                    }
                                }
                                li {
                                    a href="/shell" aria-current=[current(nav, Nav::Shell)] {
                                        "kubectl shell"
                                    }
                                }
                            }
                        }
                        div.account {
                            button #theme type="button" title="Switch between light and dark" { "Theme" }
                            span.user title="Signed in" {
                                (printable(&v.session.user))
                                @if v.admin { " (admin)" }
                            }
                            form method="post" action="/signout" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    } @else {
                        div.account {
                            button #theme type="button" title="Switch between light and dark" { "Theme" }
                        }
                    }
                }
                @if viewer.is_some() {
                    div #signed-out .banner role="alert" hidden {
                        "You are signed out (the session ended or was revoked). "
                        a href="/signin" { "Sign in again" }
                    }
                }
                main #main { (content) }
            }
        }
    }
}

fn current(nav: Nav, this: Nav) -> Option<&'static str> {
    (nav == this).then_some("page")
}

/// Text recorded from a client, safe to show to a person (escapes control characters).
pub fn printable(text: &str) -> String {
    crate::audit::format::printable(text).into_owned()
}

/// `2026-12-06 10:15:03` (UTC), the console's time format, and the RFC 3339 form for `datetime`.
pub fn time_cell(us: i64) -> Markup {
    let full = crate::audit::model::format_time_us(us);
    let shown = full.get(..19).unwrap_or(&full).replace('T', " ");
    html! { time datetime=(full) title=(full) { (shown) } }
}

pub fn duration(us: Option<i64>) -> String {
    match us {
        Some(us) => crate::audit::format::format_duration_us(us),
        None => "–".into(),
    }
}
