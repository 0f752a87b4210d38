//! The web console (issue 14).
//!
//! In process, through the router: sign-in (the same answer for an unknown
//! user and a wrong password, a disabled user, the cookie's attributes),
//! sign-out, the checks on every POST (origin, CSRF token, the API's rule
//! for the role), the pages' headers and the embedded assets.
//!
//! In a real browser: `console_works_in_headless_chromium` starts the
//! release binary, makes the first admin with the CLI and runs
//! `tests/console/console.mjs` (playwright-core driving Debian's
//! `/usr/bin/chromium`); the script's checks are listed at its top. Its
//! screenshots are kept in `<target tmp>/console-screenshots/`. The
//! script ends with registration switched off for queue support on the
//! On/Off page; a sipp caller then hears "unable to offer callbacks".

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, Request, StatusCode};
use jiff::Timestamp;
use tower::ServiceExt;

use callbackd::api::{self, ApiOptions};
use callbackd::callback::QueueId;
use callbackd::callback::store::accounts::hash_password;
use callbackd::callback::store::{
    AccountStore, AuditQuery, CallbackQuery, Change, ManageStore, NewUser, Role, SqliteStore,
    UserPatch,
};
use callbackd::config::Config;
use callbackd::engine::{self, EngineHandle};

use support::{EngineConfig, Ports, TestDir, require_tools};

const WAIT: Duration = Duration::from_secs(10);
const HOST_NAME: &str = "127.0.0.1:8080";
const PASSWORD: &str = "correct horse battery";

/// An engine in this process and the API's router over it (the console
/// included). Users, each with [`PASSWORD`]: `root` (admin), `ann`
/// (manager of unit east: queue support), `vic` (viewer of east), `dee`
/// (manager of east, disabled).
struct Harness {
    _engine: EngineHandle,
    app: Router,
    store_path: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An answer: status, headers, body text.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let at = self
            .text
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.text))
            + marker.len();
        self.text[at..]
            .split('"')
            .next()
            .expect("a quoted value")
            .to_owned()
    }
}

impl Harness {
    async fn start(name: &str) -> Harness {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = TempDir(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "console-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).expect("target tmp dir is writable");
        let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let text = format!(
            r#"
            [sip]
            bind = "127.0.0.1:5999"
            transports = ["udp"]
            [rtp]
            port_min = 36100
            port_max = 36199
            [call]
            max_calls = 10
            [prompts]
            dir = '{}'
            [store]
            path = "callbacks.sqlite"
            [org]
            timezone = "America/Chicago"
            [[queues]]
            id = "support"
            [[queues]]
            id = "sales"
            [[agents]]
            id = "alice"
            uri = "sip:alice@127.0.0.1:5999"
            queues = ["support"]
            "#,
            prompts.display()
        );
        let mut config = Config::from_toml_str(&text, "console-test").expect("test config");
        config.sip.bind = "127.0.0.1:0".parse().expect("addr");
        config.bind_ephemeral_sip_port();
        let store_path = config.store_path(&dir.0);
        let settings = config.check(&dir.0).expect("valid config");
        let options = ApiOptions::new(&settings);
        {
            let mut store = SqliteStore::open(&store_path).expect("store");
            let change = Change {
                actor: "test".into(),
                at: Timestamp::now(),
            };
            store
                .create_unit("east", &[QueueId("support".into())], &change)
                .expect("unit");
            let phc = hash_password(PASSWORD).expect("hash");
            for (name, role, units) in [
                ("root", Role::Admin, vec![]),
                ("ann", Role::Manager, vec!["east".to_owned()]),
                ("vic", Role::Viewer, vec!["east".to_owned()]),
                ("dee", Role::Manager, vec!["east".to_owned()]),
            ] {
                store
                    .create_user(
                        &NewUser {
                            name: name.into(),
                            role,
                            units,
                        },
                        &change,
                    )
                    .expect("user");
                store
                    .set_password(name, Some(&phc), &change)
                    .expect("password");
            }
            store
                .update_user(
                    "dee",
                    &UserPatch {
                        disabled: Some(true),
                        ..UserPatch::default()
                    },
                    &change,
                )
                .expect("disable dee");
        }
        let engine = engine::start(settings).await.expect("engine starts");
        let app = api::router(engine.control(), options);
        Harness {
            _engine: engine,
            app,
            store_path,
            _dir: dir,
        }
    }

    /// One request; `Host` is always sent (as HTTP/1.1 requires).
    async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        form: Option<&str>,
    ) -> Answer {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, HOST_NAME);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = match form {
            Some(text) => {
                builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(text.to_owned())
            }
            None => Body::empty(),
        };
        let response = tokio::time::timeout(
            WAIT,
            self.app
                .clone()
                .oneshot(builder.body(body).expect("request")),
        )
        .await
        .expect("answered in time")
        .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        Answer {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn sign_in_answer(&self, name: &str, password: &str) -> Answer {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("name", name)
            .append_pair("password", password)
            .finish();
        self.send("POST", "/sign-in", &[], Some(&form)).await
    }

    /// Signs `name` in: the `Cookie` header value and a page's CSRF token.
    async fn sign_in(&self, name: &str) -> (String, String) {
        let answer = self.sign_in_answer(name, PASSWORD).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
        let cookie = answer
            .header("set-cookie")
            .split(';')
            .next()
            .expect("a cookie")
            .to_owned();
        let page = self.send("GET", "/", &[("cookie", &cookie)], None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        (cookie, page.csrf())
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.store_path).expect("store")
    }

    /// Every stored callback.
    fn callbacks(&self) -> Vec<callbackd::callback::store::ManagedRow> {
        let all = CallbackQuery {
            limit: 1000,
            ..CallbackQuery::default()
        };
        self.store().query(&all).expect("query")
    }
}

/// `POST /callbacks` form fields for a callback tomorrow.
fn new_callback(csrf: &str, number: &str) -> String {
    let tomorrow = Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let local = tomorrow
        .to_zoned(jiff::tz::TimeZone::get("America/Chicago").expect("zone"))
        .strftime("%Y-%m-%dT%H:%M")
        .to_string();
    form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", csrf)
        .append_pair("queue", "support")
        .append_pair("number", number)
        .append_pair("scheduled_for", &local)
        .finish()
}

#[tokio::test]
async fn an_unknown_user_and_a_wrong_password_get_the_same_answer() {
    let h = Harness::start("sign-in").await;
    let wrong = h.sign_in_answer("ann", "not the password").await;
    let unknown = h.sign_in_answer("nobody", "not the password").await;
    for answer in [&wrong, &unknown] {
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer.text.contains("Wrong user name or password."),
            "{}",
            answer.text
        );
        assert_eq!(answer.header("set-cookie"), "");
    }
    // Only the name typed in differs.
    assert_eq!(
        wrong.text.replace("\"ann\"", "\"nobody\""),
        unknown.text,
        "the answers differ beyond the name typed in"
    );
    // Someone who knows a disabled user's password is told why.
    let disabled = h.sign_in_answer("dee", PASSWORD).await;
    assert!(disabled.text.contains("This user is disabled."));
    assert_eq!(disabled.header("set-cookie"), "");

    let ok = h.sign_in_answer("ann", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.header("location"), "/");
    let cookie = ok.header("set-cookie");
    let attributes: Vec<&str> = cookie.split("; ").skip(1).collect();
    assert_eq!(
        attributes,
        ["HttpOnly", "SameSite=Strict", "Path=/"],
        "{cookie}"
    );
    let value = cookie
        .split(';')
        .next()
        .and_then(|p| p.strip_prefix("cbd_session="))
        .expect("the session cookie");
    assert_eq!(value.len(), 43, "256 bits, base64url: {value}");
}

#[tokio::test]
async fn repeated_failures_lock_the_name_for_a_while() {
    let h = Harness::start("brake").await;
    for _ in 0..5 {
        let answer = h.sign_in_answer("vic", "wrong password").await;
        assert!(answer.text.contains("Wrong user name or password."));
    }
    // Even the right password is not checked now.
    let locked = h.sign_in_answer("vic", PASSWORD).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        locked.text.contains("Too many failed sign-ins"),
        "{}",
        locked.text
    );
    // Another name is not affected.
    let other = h.sign_in_answer("ann", PASSWORD).await;
    assert_eq!(other.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn pages_need_a_session_and_sign_out_ends_it() {
    let h = Harness::start("pages").await;
    let anonymous = h.send("GET", "/", &[], None).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.header("location"), "/sign-in");
    let fragment = h
        .send("GET", "/dashboard/live", &[("hx-request", "true")], None)
        .await;
    assert_eq!(fragment.header("hx-redirect"), "/sign-in");

    let (cookie, csrf) = h.sign_in("vic").await;
    let page = h.send("GET", "/", &[("cookie", &cookie)], None).await;
    assert!(page.text.contains("Queue support"), "{}", page.text);
    assert!(
        !page.text.contains("Queue sales"),
        "vic's units have no sales"
    );
    assert_eq!(page.header("cache-control"), "no-store");
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let live = h
        .send("GET", "/dashboard/live", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(live.text.starts_with("<div id=\"live\""), "{}", live.text);

    let out = h
        .send(
            "POST",
            "/sign-out",
            &[("cookie", &cookie)],
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let after = h.send("GET", "/", &[("cookie", &cookie)], None).await;
    assert_eq!(after.header("location"), "/sign-in");
}

#[tokio::test]
async fn every_post_needs_the_origin_the_token_and_the_apis_role() {
    let h = Harness::start("posts").await;
    let (ann, ann_csrf) = h.sign_in("ann").await;
    let (vic, vic_csrf) = h.sign_in("vic").await;
    let count = || h.callbacks().len();

    // Another site, the right cookie and token: refused before anything.
    let cross = h
        .send(
            "POST",
            "/callbacks",
            &[("cookie", &ann), ("origin", "http://evil.example")],
            Some(&new_callback(&ann_csrf, "3125550188")),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(cross.text.contains("another site"), "{}", cross.text);
    // A token of another session, or none.
    for token in [vic_csrf.as_str(), ""] {
        let answer = h
            .send(
                "POST",
                "/callbacks",
                &[("cookie", &ann)],
                Some(&new_callback(token, "3125550188")),
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    }
    // No session.
    let answer = h
        .send(
            "POST",
            "/callbacks",
            &[],
            Some(&new_callback(&ann_csrf, "3125550188")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // The viewer, with their own token: the API's rule says manager.
    let answer = h
        .send(
            "POST",
            "/callbacks",
            &[("cookie", &vic), ("origin", "http://127.0.0.1:8080")],
            Some(&new_callback(&vic_csrf, "3125550188")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.text.contains("needs manager"), "{}", answer.text);
    assert_eq!(count(), 0, "nothing was created");

    // The manager, from the console's own page.
    let made = h
        .send(
            "POST",
            "/callbacks",
            &[("cookie", &ann), ("origin", "http://127.0.0.1:8080")],
            Some(&new_callback(&ann_csrf, "3125550188")),
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.text);
    let location = made.header("location").to_owned();
    let id: i64 = location
        .strip_prefix("/callbacks/")
        .and_then(|rest| rest.strip_suffix("?done=created"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("location {location}"));
    let stored = h.callbacks();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].row.id.0, id);
    assert_eq!(stored[0].created_by.as_deref(), Some("ann"));
    // The API's validation: the same number again is its 409, shown.
    let again = h
        .send(
            "POST",
            "/callbacks",
            &[("cookie", &ann)],
            Some(&new_callback(&ann_csrf, "3125550188")),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again.text.contains("already has callback"),
        "{}",
        again.text
    );

    // Cancel: the viewer may not, the manager may; the API's audit row.
    let path = format!("/callbacks/{id}/cancel");
    let refused = h
        .send(
            "POST",
            &path,
            &[("cookie", &vic)],
            Some(&format!("csrf={vic_csrf}")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let detail = h
        .send(
            "GET",
            &format!("/callbacks/{id}"),
            &[("cookie", &vic)],
            None,
        )
        .await;
    assert!(
        !detail.text.contains("Cancel"),
        "no cancel button for a viewer"
    );
    let cancelled = h
        .send(
            "POST",
            &path,
            &[("cookie", &ann)],
            Some(&format!("csrf={ann_csrf}")),
        )
        .await;
    assert_eq!(
        cancelled.status,
        StatusCode::SEE_OTHER,
        "{}",
        cancelled.text
    );
    let audit = h
        .store()
        .audit(&AuditQuery {
            from: None,
            to: None,
            after_id: None,
            limit: 100,
        })
        .expect("audit");
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .filter(|r| r.target.starts_with("callback:"))
        .map(|r| (r.action.as_str(), r.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("create_callback", "ann"), ("cancel_callback", "ann")]
    );
}

#[tokio::test]
async fn switches_and_agents_follow_the_apis_rules() {
    let h = Harness::start("switches").await;
    let (ann, ann_csrf) = h.sign_in("ann").await;
    let (vic, vic_csrf) = h.sign_in("vic").await;
    let form = |csrf: &str, switch: &str, on: bool| format!("csrf={csrf}&switch={switch}&on={on}");

    let page = h.send("GET", "/switches", &[("cookie", &vic)], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("Queue support"), "{}", page.text);
    assert!(!page.text.contains("Switch "), "no toggle for a viewer");
    let refused = h
        .send(
            "POST",
            "/switches/queues/support",
            &[("cookie", &vic)],
            Some(&form(&vic_csrf, "registration", false)),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // A manager: their queue's switches, not the organisation's.
    let page = h.send("GET", "/switches", &[("cookie", &ann)], None).await;
    assert!(page.text.contains("Switch queue support registration off"));
    assert!(!page.text.contains("Switch organisation registration"));
    let org = h
        .send(
            "POST",
            "/switches/org",
            &[("cookie", &ann)],
            Some(&form(&ann_csrf, "registration", false)),
        )
        .await;
    assert_eq!(org.status, StatusCode::FORBIDDEN);
    let off = h
        .send(
            "POST",
            "/switches/queues/support",
            &[("cookie", &ann)],
            Some(&form(&ann_csrf, "registration", false)),
        )
        .await;
    assert_eq!(off.status, StatusCode::SEE_OTHER, "{}", off.text);
    let page = h.send("GET", "/switches", &[("cookie", &ann)], None).await;
    assert!(page.text.contains("Switch queue support registration on"));
    // The dashboard reads the same organisation: the queue's switch is off.
    let live = h
        .send("GET", "/dashboard/live", &[("cookie", &ann)], None)
        .await;
    let card = live
        .text
        .split("Queue support")
        .nth(1)
        .expect("the support card");
    let registration = card
        .split("Registration")
        .nth(1)
        .expect("its registration line");
    assert!(
        registration
            .trim_start_matches("</dt><dd>")
            .starts_with("<span class=\"badge off\">off"),
        "{card}"
    );
    // Another unit's queue: the API's 403.
    let other = h
        .send(
            "POST",
            "/switches/queues/sales",
            &[("cookie", &ann)],
            Some(&form(&ann_csrf, "launch", false)),
        )
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);

    // Agents: a viewer sees, a manager pauses and resumes.
    let page = h.send("GET", "/agents", &[("cookie", &vic)], None).await;
    assert!(page.text.contains("alice") && !page.text.contains("Pause"));
    let refused = h
        .send(
            "POST",
            "/agents/alice",
            &[("cookie", &vic)],
            Some(&format!("csrf={vic_csrf}&paused=true")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let paused = h
        .send(
            "POST",
            "/agents/alice",
            &[("cookie", &ann)],
            Some(&format!("csrf={ann_csrf}&paused=true")),
        )
        .await;
    assert_eq!(paused.header("location"), "/agents?done=paused");
    let page = h.send("GET", "/agents", &[("cookie", &ann)], None).await;
    assert!(page.text.contains("Resume alice"), "{}", page.text);
}

#[tokio::test]
async fn assets_are_embedded_and_cached_for_long() {
    let h = Harness::start("assets").await;
    let page = h.send("GET", "/sign-in", &[], None).await;
    let htmx_path = "/assets/htmx-2.0.11.min.js";
    assert!(page.text.contains(htmx_path), "{}", page.text);
    let htmx = h.send("GET", htmx_path, &[], None).await;
    assert_eq!(htmx.status, StatusCode::OK);
    assert!(htmx.text.starts_with("var htmx=function()"));
    assert_eq!(
        htmx.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    let css_path = page
        .text
        .split("href=\"")
        .find_map(|rest| rest.split('"').next().filter(|p| p.ends_with(".css")))
        .expect("a style sheet link")
        .to_owned();
    let css = h.send("GET", &css_path, &[], None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header("content-type").starts_with("text/css"));
    // The API beside it is untouched: still JSON, still its own 404.
    let api = h.send("GET", "/v1/nope", &[], None).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert!(api.header("content-type").starts_with("application/json"));
}

/// Issue 14 acceptance 1 (all but the sipp caller), 2 (screenshots), 3
/// and 4, in headless Chromium against the release binary. See
/// `tests/console/console.mjs`.
#[test]
fn console_works_in_headless_chromium() {
    let test = "console_works_in_headless_chromium";
    if !require_tools(test, &["/usr/bin/chromium", "node", "npm", "sipp"]) {
        return;
    }
    let scripts = support::repo_root().join("tests").join("console");
    if !scripts.join("node_modules/playwright-core").is_dir() {
        // scripts/install-test-tools.sh does this in CI.
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&scripts)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci in {}", scripts.display());
    }
    let _serial = support::interop_lock();
    let dir = TestDir::new(test);
    let main = Ports::allocate();
    let mut config = EngineConfig::new(&main);
    config.callbacks = Some(support::CallbackConfig {
        termination: std::net::SocketAddr::from(([127, 0, 0, 1], main.sipp_sip)),
        agents: vec![(
            "alice".into(),
            format!("sip:alice@127.0.0.1:{}", main.sipp_sip),
        )],
        poll_interval_ms: 200,
        retry_time_s: 60,
        max_retries: 1,
        agent_ring_timeout_s: 10,
        customer_ring_timeout_s: 10,
        agent_cooldown_s: 10,
        callback_number: "3125550100".into(),
        registered_agents: Vec::new(),
        digest_algorithms: Vec::new(),
    });
    let api_port = main.engine_sip + 2;
    config.api_port = Some(api_port);
    let mut engine = support::Engine::start(&config, &dir);

    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(support::callbackd_bin())
            .arg("--config")
            .arg(engine.config_path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("callbackd runs");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(text.as_bytes())
                .expect("stdin");
        }
        let out = child.wait_with_output().expect("callbackd ends");
        assert!(out.status.success(), "callbackd {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let token = cli(&["user", "add", "root", "--role", "admin"], None);
    cli(&["user", "passwd", "root"], Some("root-password-1\n"));

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let out = Command::new("node")
        .arg(scripts.join("console.mjs"))
        .current_dir(&scripts)
        .env("CONSOLE_URL", format!("http://127.0.0.1:{api_port}"))
        .env("ADMIN_NAME", "root")
        .env("ADMIN_PASSWORD", "root-password-1")
        .env("ADMIN_TOKEN", &token)
        .env("SHOTS", &shots)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "console.mjs failed ({}):\n{stdout}\n{}\nengine log: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        engine.log_tail(30)
    );
    println!("screenshots in {}", shots.display());

    // The script left registration off for queue support (as the manager,
    // on the On/Off page): the next caller hears "unable to offer
    // callbacks" and nothing is stored.
    let caller = support::Sipp::uac(
        support::scenario_file("caller_hears_unable.xml"),
        engine.sip_addr(),
        &main,
    )
    .timeout_s(40)
    .run(&dir, "caller-off");
    support::assert_clean(&caller, 1);
    let call_id = caller.call_id(1, std::net::IpAddr::from([127, 0, 0, 1]));
    let line = engine
        .log_lines()
        .into_iter()
        .find(|l| support::is_call_event(l, "IVR starts", &call_id))
        .unwrap_or_else(|| panic!("no \"IVR starts\" for {call_id}: {}", engine.log_tail(30)));
    assert_eq!(
        support::log_field(&line, "offer_callbacks"),
        Some("false"),
        "{line}"
    );
    let numbers: Vec<String> = support::stored_callbacks(&engine.store_path())
        .into_iter()
        .map(|c| c.number)
        .collect();
    assert_eq!(
        numbers,
        ["3125550188", "3125550199"],
        "only the console's two"
    );
    engine.stop();
    engine.assert_no_panic();
}
