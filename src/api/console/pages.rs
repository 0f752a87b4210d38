//! The console's HTML: one function per page or fragment, from plain data
//! the handlers gathered (maud escapes every interpolated value).
//!
//! Accessibility: every input has a `<label>`, tables have header cells,
//! the current page is `aria-current`, messages are `role="status"` or
//! `role="alert"`, a skip link leads to the content; no information is in
//! colour alone. Buttons a role may not use are not rendered.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use maud::{DOCTYPE, Markup, html};

use crate::callback::store::Role;
use crate::callback::view::CallbackBody;

use super::super::AgentBody;
use super::super::callbacks::{AttemptBody, LegBody};
use super::super::org::SwitchesBody;
use super::{CSS_URL, HTMX_URL};

/// How often the dashboard's live part is fetched again, in seconds.
pub const LIVE_EVERY_S: u32 = 3;

/// The page a link leads to (for `aria-current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/`.
    Dashboard,
    /// `/callbacks`.
    Callbacks,
    /// `/agents`.
    Agents,
    /// `/switches`.
    Switches,
    /// A page outside the menu.
    None,
}

/// Who is signed in, for the header and the forms.
#[derive(Debug, Clone, Copy)]
pub struct Chrome<'a> {
    /// The user's name.
    pub user: &'a str,
    /// Their role.
    pub role: Role,
    /// The session's CSRF token, put in every form.
    pub csrf: &'a str,
    /// The organisation's zone: times are shown in it.
    pub tz: &'a TimeZone,
}

/// A message above a page's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something was done.
    Done(String),
    /// Something was refused or failed.
    Refused(String),
}

/// The whole page around `content`.
pub fn layout(title: &str, nav: Nav, chrome: Option<&Chrome<'_>>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx's indicator styles would be an inline <style>; the
                // console's Content-Security-Policy allows none.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false}"#;
                title { (title) " · callbackd" }
                link rel="stylesheet" href=(CSS_URL.as_str());
                script src=(HTMX_URL) defer {}
            }
            body {
                a.skip href="#content" { "Skip to content" }
                header.top {
                    a.brand href="/" { "callbackd" }
                    @if let Some(chrome) = chrome {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/" aria-current=[(nav == Nav::Dashboard).then_some("page")] { "Dashboard" } }
                                li { a href="/callbacks" aria-current=[(nav == Nav::Callbacks).then_some("page")] { "Callbacks" } }
                                li { a href="/agents" aria-current=[(nav == Nav::Agents).then_some("page")] { "Agents" } }
                                li { a href="/switches" aria-current=[(nav == Nav::Switches).then_some("page")] { "On/Off" } }
                            }
                        }
                        div.who {
                            span { (chrome.user) " (" (chrome.role) ")" }
                            form method="post" action="/sign-out" {
                                (csrf_field(chrome.csrf))
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="content" { (content) }
            }
        }
    }
}

/// The sign-in form, maybe with why the last try failed.
pub fn sign_in(name: &str, message: Option<&str>) -> Markup {
    layout(
        "Sign in",
        Nav::None,
        None,
        html! {
            div.signin {
                h1 { "Sign in" }
                @if let Some(message) = message {
                    p.message.error role="alert" { (message) }
                }
                form.stack method="post" action="/sign-in" {
                    label for="name" { "User name" }
                    input id="name" name="name" type="text" autocomplete="username" required value=(name);
                    label for="password" { "Password" }
                    input id="password" name="password" type="password" autocomplete="current-password" required;
                    p { button type="submit" { "Sign in" } }
                }
            }
        },
    )
}

/// A refusal or an error as a page.
pub fn problem(chrome: Option<&Chrome<'_>>, title: &str, message: &str) -> Markup {
    layout(
        title,
        Nav::None,
        chrome,
        html! {
            h1 { (title) }
            p.message.error role="alert" { (message) }
            p { a href="/" { "Back to the dashboard" } }
        },
    )
}

/// The hidden CSRF field of every form.
fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

fn notice(notice: Option<&Notice>) -> Markup {
    html! {
        @match notice {
            Some(Notice::Done(text)) => p.message.ok role="status" { (text) },
            Some(Notice::Refused(text)) => p.message.error role="alert" { (text) },
            None => {},
        }
    }
}

// ---------------------------------------------------------------------------
// Dashboard
// ---------------------------------------------------------------------------

/// What the dashboard shows: the organisation and each visible queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    /// Calls the call layer holds now (inbound and outbound legs).
    pub calls: usize,
    /// The engine is shutting down.
    pub draining: bool,
    /// The organisation's registration switch.
    pub registration: bool,
    /// The organisation's launch switch.
    pub launch: bool,
    /// The visible queues, in id order.
    pub queues: Vec<QueueLine>,
}

/// One queue on the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueLine {
    /// The queue's id.
    pub id: String,
    /// Callbacks waiting for their turn or their time.
    pub pending: u64,
    /// Callbacks being dialed now.
    pub dialing: u64,
    /// The ECBT last announced to a caller, in minutes.
    pub ecbt_minutes: Option<u32>,
    /// The announced ECBTs' measured error: mean in seconds (positive:
    /// later than announced) and how many callbacks it is over.
    pub ecbt_error: Option<(f64, u64)>,
    /// The rolling average handle time, in seconds.
    pub handle_time_s: u64,
    /// Agents serving the queue who are available.
    pub available: usize,
    /// Agents serving the queue who ring or talk.
    pub on_call: usize,
    /// Agents serving the queue who are paused.
    pub paused: usize,
    /// The queue's registration switch.
    pub registration: bool,
    /// The queue's launch switch.
    pub launch: bool,
}

/// The dashboard page: its live part, fetched again every few seconds.
pub fn dashboard(chrome: &Chrome<'_>, overview: &Overview) -> Markup {
    layout(
        "Dashboard",
        Nav::Dashboard,
        Some(chrome),
        html! {
            h1 { "Dashboard" }
            (dashboard_live(overview))
        },
    )
}

/// The dashboard's live part (also the answer of `/dashboard/live`): it
/// replaces itself every [`LIVE_EVERY_S`] seconds.
pub fn dashboard_live(o: &Overview) -> Markup {
    let switch = |on: bool| {
        html! {
            @if on { span.badge.on { "on" } } @else { span.badge.off { "off" } }
        }
    };
    html! {
        div id="live" hx-get="/dashboard/live" hx-trigger=(format!("every {LIVE_EVERY_S}s")) hx-swap="outerHTML" {
            div.panel {
                p {
                    "Calls now: " strong.num data-testid="calls-now" { (o.calls) }
                    " · Registration " (switch(o.registration))
                    " · Launching " (switch(o.launch))
                    @if o.draining { " · " strong { "Shutting down" } }
                }
            }
            @if o.queues.is_empty() {
                p.muted { "No queue is in your business units." }
            }
            div.cards {
                @for q in &o.queues {
                    section.card aria-labelledby=(format!("q-{}", q.id)) {
                        h2 id=(format!("q-{}", q.id)) { "Queue " (q.id) }
                        dl {
                            dt { "Callbacks pending" } dd data-testid="pending" { (q.pending) }
                            dt { "Callbacks dialing" } dd { (q.dialing) }
                            dt { "ECBT last announced" }
                            dd { @match q.ecbt_minutes { Some(m) => { (m) " min" }, None => "—" } }
                            dt { "ECBT error (mean)" }
                            dd { @match q.ecbt_error {
                                Some((mean, n)) => { (signed_minutes(mean)) " (" (n) ")" },
                                None => "—",
                            } }
                            dt { "Average handle time" } dd { (duration_text(q.handle_time_s)) }
                            dt { "Agents available" } dd { (q.available) }
                            dt { "Agents on call" } dd { (q.on_call) }
                            dt { "Agents paused" } dd { (q.paused) }
                            dt { "Registration" } dd { (switch(q.registration)) }
                            dt { "Launching" } dd { (switch(q.launch)) }
                        }
                    }
                }
            }
        }
    }
}

fn signed_minutes(seconds: f64) -> String {
    let minutes = seconds / 60.0;
    if minutes >= 0.0 {
        format!("+{minutes:.1} min")
    } else {
        format!("{minutes:.1} min")
    }
}

fn duration_text(seconds: u64) -> String {
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

// ---------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------

/// The list's filters as the form sent them (empty: no filter).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Filters {
    /// A status name.
    #[serde(default)]
    pub status: String,
    /// A queue id.
    #[serde(default)]
    pub queue: String,
    /// A number, as stored.
    #[serde(default)]
    pub number: String,
    /// The API's cursor: the page after it.
    #[serde(default)]
    pub cursor: String,
}

impl Filters {
    /// The filters as a query string (without `cursor`), for links.
    pub fn query(&self) -> String {
        let mut pairs = form_urlencoded_pairs();
        for (k, v) in [
            ("status", &self.status),
            ("queue", &self.queue),
            ("number", &self.number),
        ] {
            if !v.is_empty() {
                pairs.append_pair(k, v);
            }
        }
        pairs.finish()
    }
}

fn form_urlencoded_pairs() -> form_urlencoded::Serializer<'static, String> {
    form_urlencoded::Serializer::new(String::new())
}

/// The callbacks page.
pub struct ListPage<'a> {
    /// The filters in force.
    pub filters: &'a Filters,
    /// This page's rows.
    pub rows: &'a [CallbackBody],
    /// The cursor of the next page.
    pub next_cursor: Option<&'a str>,
    /// The queues the user may pick (theirs).
    pub queues: &'a [String],
    /// Show the create form and the cancel buttons.
    pub can_change: bool,
    /// What the last action did.
    pub notice: Option<&'a Notice>,
    /// The create form's values after a refusal.
    pub draft: &'a Draft,
}

/// The create form's values.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Draft {
    /// The queue.
    #[serde(default)]
    pub queue: String,
    /// The number.
    #[serde(default)]
    pub number: String,
    /// `YYYY-MM-DDTHH:MM` in the organisation's zone.
    #[serde(default)]
    pub scheduled_for: String,
}

/// The statuses a callback can have, for the filter.
const STATUSES: [&str; 6] = [
    "pending",
    "dialing",
    "completed",
    "failed",
    "expired",
    "cancelled",
];

/// The callbacks list with its filters, paging, the create form and the
/// cancel buttons (managers and admins).
pub fn callbacks(chrome: &Chrome<'_>, page: &ListPage<'_>) -> Markup {
    let f = page.filters;
    let query = f.query();
    let sep = if query.is_empty() { "" } else { "&" };
    html! {
        h1 { "Callbacks" }
        (notice(page.notice))
        @if page.can_change {
            details.panel open[matches!(page.notice, Some(Notice::Refused(_)))] {
                summary { strong { "Schedule a callback" } }
                form.row method="post" action="/callbacks" {
                    (csrf_field(chrome.csrf))
                    div {
                        label for="new-queue" { "Queue" }
                        select id="new-queue" name="queue" required {
                            @for q in page.queues {
                                option value=(q) selected[*q == page.draft.queue] { (q) }
                            }
                        }
                    }
                    div {
                        label for="new-number" { "Number" }
                        input id="new-number" name="number" type="tel" inputmode="numeric" required value=(page.draft.number) placeholder="3125550188";
                    }
                    div {
                        label for="new-when" { "Call at (" (chrome.tz.iana_name().unwrap_or("UTC")) ")" }
                        input id="new-when" name="scheduled_for" type="datetime-local" required value=(page.draft.scheduled_for);
                    }
                    div { button type="submit" { "Schedule" } }
                }
            }
        }
        form.row method="get" action="/callbacks" aria-label="Filters" {
            div {
                label for="f-status" { "Status" }
                select id="f-status" name="status" {
                    option value="" { "Any" }
                    @for s in STATUSES {
                        option value=(s) selected[f.status == s] { (s) }
                    }
                }
            }
            div {
                label for="f-queue" { "Queue" }
                select id="f-queue" name="queue" {
                    option value="" { "Any" }
                    @for q in page.queues {
                        option value=(q) selected[f.queue == *q] { (q) }
                    }
                }
            }
            div {
                label for="f-number" { "Number" }
                input id="f-number" name="number" type="search" inputmode="numeric" value=(f.number);
            }
            div { button type="submit" { "Filter" } }
        }
        div.table-wrap {
            table {
                caption.muted { "Oldest first" }
                thead { tr {
                    th.num scope="col" { "Id" }
                    th scope="col" { "Queue" }
                    th scope="col" { "Number" }
                    th scope="col" { "Status" }
                    th scope="col" { "Next attempt" }
                    th.num scope="col" { "Attempts" }
                    @if page.can_change { th scope="col" { span.skip { "Actions" } } }
                } }
                tbody {
                    @for cb in page.rows {
                        tr data-id=(cb.id) {
                            td.num { a href=(format!("/callbacks/{}", cb.id)) { (cb.id) } }
                            td { (cb.queue) }
                            td { (cb.number) }
                            td { (cb.status) }
                            td { (cb.next_attempt_at.as_deref().map(|t| local(t, chrome.tz)).unwrap_or_default()) }
                            td.num { (cb.attempts) }
                            @if page.can_change {
                                td {
                                    @if cb.status == "pending" {
                                        (cancel_form(chrome, cb.id))
                                    }
                                }
                            }
                        }
                    }
                    @if page.rows.is_empty() {
                        tr { td colspan="7" { "No callback matches." } }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if !f.cursor.is_empty() {
                a href=(format!("/callbacks?{query}")) { "First page" }
            }
            @if let Some(next) = page.next_cursor {
                a href=(format!("/callbacks?{query}{sep}cursor={next}")) rel="next" { "Next page" }
            }
        }
    }
}

fn cancel_form(chrome: &Chrome<'_>, id: i64) -> Markup {
    html! {
        form method="post" action=(format!("/callbacks/{id}/cancel")) {
            (csrf_field(chrome.csrf))
            button.danger type="submit" aria-label=(format!("Cancel callback {id}")) { "Cancel" }
        }
    }
}

/// One callback with its attempts and call legs; cancel and reschedule
/// for managers and admins while it is pending.
pub fn callback(
    chrome: &Chrome<'_>,
    cb: &CallbackBody,
    attempts: &[AttemptBody],
    legs: &[LegBody],
    can_change: bool,
    notice_: Option<&Notice>,
) -> Markup {
    let tz = chrome.tz;
    html! {
        h1 { "Callback " (cb.id) }
        (notice(notice_))
        div.table-wrap {
            table {
                tbody {
                    tr { th scope="row" { "Queue" } td { (cb.queue) } }
                    tr { th scope="row" { "Number" } td { (cb.number) } }
                    tr { th scope="row" { "Status" } td data-testid="status" { (cb.status) } }
                    tr { th scope="row" { "Priority" } td { (cb.priority) } }
                    tr { th scope="row" { "Registered" } td { (local(&cb.registered_at, tz)) } }
                    tr { th scope="row" { "Place in line since" } td { (local(&cb.queued_at, tz)) } }
                    @if let Some(at) = &cb.scheduled_for { tr { th scope="row" { "Scheduled for" } td { (local(at, tz)) } } }
                    @if let Some(at) = &cb.next_attempt_at { tr { th scope="row" { "Next attempt" } td { (local(at, tz)) } } }
                    tr { th scope="row" { "Window ends" } td { (local(&cb.expires_at, tz)) } }
                    tr { th scope="row" { "Attempts" } td { (cb.attempts) } }
                    tr { th scope="row" { "ECBT announced" } td { (cb.ecbt_quoted_minutes) " min" } }
                    @if let Some(e) = cb.ecbt_error_s { tr { th scope="row" { "ECBT error" } td { (signed_minutes(e as f64)) } } }
                    @if !cb.caller_ani.is_empty() { tr { th scope="row" { "Caller" } td { (cb.caller_ani) } } }
                    @if let Some(by) = &cb.created_by { tr { th scope="row" { "Created by" } td { (by) } } }
                    @if let Some(data) = &cb.data { tr { th scope="row" { "Data" } td { code { (data.to_string()) } } } }
                }
            }
        }
        @if can_change && cb.status == "pending" {
            div.panel {
                h2 { "Change" }
                form.row method="post" action=(format!("/callbacks/{}/reschedule", cb.id)) {
                    (csrf_field(chrome.csrf))
                    div {
                        label for="re-when" { "Call at (" (tz.iana_name().unwrap_or("UTC")) ")" }
                        input id="re-when" name="scheduled_for" type="datetime-local" required;
                    }
                    div { button type="submit" { "Reschedule" } }
                }
                p { (cancel_form(chrome, cb.id)) }
            }
        }
        h2 { "Attempts" }
        @if attempts.is_empty() { p.muted { "None yet." } } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Started" } th scope="col" { "Ended" } th scope="col" { "Outcome" }
                    th.num scope="col" { "SIP" } th scope="col" { "Agent" }
                } }
                tbody { @for a in attempts { tr {
                    td { (local(&a.started_at, tz)) } td { (local(&a.ended_at, tz)) } td { (a.outcome) }
                    td.num { (a.sip_status.map(|s| s.to_string()).unwrap_or_default()) }
                    td { (a.agent.as_deref().unwrap_or("")) }
                } } }
            } }
        }
        h2 { "Call legs" }
        @if legs.is_empty() { p.muted { "None." } } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Leg" } th scope="col" { "Start" } th scope="col" { "Answer" }
                    th scope="col" { "End" } th scope="col" { "Outcome" } th.num scope="col" { "SIP" } th scope="col" { "Peer" }
                } }
                tbody { @for l in legs { tr {
                    td { (l.leg) } td { (local(&l.start, tz)) }
                    td { (l.answer.as_deref().map(|t| local(t, tz)).unwrap_or_default()) }
                    td { (local(&l.end, tz)) } td { (l.outcome) }
                    td.num { (l.sip_code.map(|s| s.to_string()).unwrap_or_default()) }
                    td { (l.peer) }
                } } }
            } }
        }
        p { a href="/callbacks" { "All callbacks" } }
    }
}

// ---------------------------------------------------------------------------
// On/Off
// ---------------------------------------------------------------------------

/// One switch's toggle: a form that sets it to the other position.
fn toggle(chrome: &Chrome<'_>, action: &str, switch: &str, label: &str, on: bool) -> Markup {
    let verb = if on { "off" } else { "on" };
    html! {
        form method="post" action=(action) {
            (csrf_field(chrome.csrf))
            input type="hidden" name="switch" value=(switch);
            input type="hidden" name="on" value=(!on);
            button.plain type="submit" aria-label=(format!("Switch {label} {verb}")) { "Switch " (verb) }
        }
    }
}

/// The organisation's and each visible queue's switches (Mindful's
/// On/Off), what they mean now, and a toggle per switch the role may set.
pub fn switches(
    chrome: &Chrome<'_>,
    body: &SwitchesBody,
    can_org: bool,
    can_queues: bool,
    notice_: Option<&Notice>,
) -> Markup {
    let state = |on: bool| {
        html! { @if on { span.badge.on { "on" } } @else { span.badge.off { "off" } } }
    };
    html! {
        h1 { "On/Off" }
        (notice(notice_))
        @for w in &body.warnings {
            p.message.error role="alert" { (w) }
        }
        p.muted {
            "Registration off: callers hear that callbacks cannot be offered now. "
            "Launching off: callbacks wait; callers may still register, without an estimated time."
        }
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { "Scope" }
                    th scope="col" { "Registration" }
                    th scope="col" { "Launching" }
                    th.num scope="col" { "Pending" }
                } }
                tbody {
                    tr data-scope="org" {
                        th scope="row" { "Organisation" }
                        td { (state(body.org.registration_enabled)) @if can_org { (toggle(chrome, "/switches/org", "registration", "organisation registration", body.org.registration_enabled)) } }
                        td { (state(body.org.launch_enabled)) @if can_org { (toggle(chrome, "/switches/org", "launch", "organisation launching", body.org.launch_enabled)) } }
                        td.num { (body.pending_callbacks.values().sum::<u64>()) }
                    }
                    @for (id, s) in &body.queues {
                        @let action = format!("/switches/queues/{id}");
                        tr data-scope=(format!("queue:{id}")) {
                            th scope="row" { "Queue " (id) }
                            td { (state(s.registration_enabled)) @if can_queues { (toggle(chrome, &action, "registration", &format!("queue {id} registration"), s.registration_enabled)) } }
                            td { (state(s.launch_enabled)) @if can_queues { (toggle(chrome, &action, "launch", &format!("queue {id} launching"), s.launch_enabled)) } }
                            td.num { (body.pending_callbacks.get(id).copied().unwrap_or(0)) }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------

/// The agents serving the user's units, with pause and resume for the
/// roles that may.
pub fn agents(
    chrome: &Chrome<'_>,
    agents: &[AgentBody],
    can_pause: bool,
    notice_: Option<&Notice>,
) -> Markup {
    html! {
        h1 { "Agents" }
        (notice(notice_))
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { "Agent" }
                    th scope="col" { "State" }
                    th scope="col" { "Reachable" }
                    @if can_pause { th scope="col" { span.skip { "Actions" } } }
                } }
                tbody {
                    @for a in agents {
                        tr data-id=(a.id) {
                            td { (a.id) }
                            td data-testid="agent-state" { (a.state.replace('_', " ")) }
                            td { @if a.reachable { "yes" } @else { "no" } }
                            @if can_pause {
                                td {
                                    form method="post" action=(format!("/agents/{}", a.id)) {
                                        (csrf_field(chrome.csrf))
                                        @if a.state == "paused" {
                                            input type="hidden" name="paused" value="false";
                                            button type="submit" aria-label=(format!("Resume {}", a.id)) { "Resume" }
                                        } @else {
                                            input type="hidden" name="paused" value="true";
                                            button.plain type="submit" aria-label=(format!("Pause {}", a.id)) { "Pause" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if agents.is_empty() {
                        tr { td colspan="4" { "No agent serves your units' queues." } }
                    }
                }
            }
        }
    }
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM` in `tz` (the text itself when it
/// does not parse).
pub fn local(text: &str, tz: &TimeZone) -> String {
    match text.parse::<Timestamp>() {
        Ok(t) => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string(),
        Err(_) => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_the_zone() {
        let tz = TimeZone::get("America/Chicago").expect("zone");
        assert_eq!(local("2026-01-05T16:00:00Z", &tz), "2026-01-05 10:00 CST");
        assert_eq!(local("not a time", &tz), "not a time");
    }

    #[test]
    fn filters_make_a_query_without_empty_fields() {
        let f = Filters {
            status: "pending".into(),
            queue: String::new(),
            number: "312 555".into(),
            cursor: "abc".into(),
        };
        assert_eq!(f.query(), "status=pending&number=312+555");
        assert_eq!(Filters::default().query(), "");
    }

    #[test]
    fn interpolated_text_is_escaped() {
        let page = sign_in("<script>x</script>", Some("a & b")).into_string();
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"), "{page}");
        assert!(page.contains("a &amp; b"), "{page}");
        assert!(!page.contains("<script>x"), "{page}");
    }
}
