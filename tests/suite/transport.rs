//! The API's HTTP layer over real TCP (issue 20, hardening): the connection
//! cap sheds with `503` at once, idle and slow-header connections are cut
//! off, an announced oversize body is refused before it is sent, heads past
//! the limits are answered in the error format, and a body sent to a POST
//! that takes none leaves the keep-alive connection usable.

use std::time::{Duration, Instant};

use longhaul_api::ServeOptions;

use crate::harness::TestDb;
use crate::http::{self, TestApp};
use crate::wire::{request, Server, PROMPT};

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: longhaul.test\r\n\r\n";

fn options(max_connections: usize, header_read: Duration, idle: Duration) -> ServeOptions {
    ServeOptions {
        max_connections,
        header_read_timeout: header_read,
        idle_timeout: idle,
    }
}

/// Long enough never to fire during a test.
const LONG: Duration = Duration::from_secs(120);

async fn serve(db: &TestDb, options: ServeOptions) -> (Server, TestApp) {
    let app = http::test_app(db).await;
    let server = Server::start(app.router.clone(), options).await;
    (server, app)
}

async fn connections_past_the_cap_are_answered_503_at_once(db: TestDb) {
    let (server, _app) = serve(&db, options(3, LONG, LONG)).await;
    let idle_one = server.connect().await;
    let _idle_two = server.connect().await;
    // Under the cap: served, and kept open (keep-alive).
    let mut served = server.connect().await;
    served.send(HEALTHZ.as_bytes()).await.expect("sent");
    let reply = served.read_reply(PROMPT).await.expect("an answer");
    assert_eq!(reply.status, 200, "{reply:?}");

    // Past the cap: answered without even sending a request...
    let mut silent = server.connect().await;
    let refused = silent.read_reply(PROMPT).await.expect("a 503 at once");
    refused.assert_error(503, "service_unavailable");
    assert_eq!(refused.json()["error"]["details"]["maxConnections"], 3);
    assert!(silent.closed_within(PROMPT).await, "then closed");
    // ...and with one.
    let mut asking = server.connect().await;
    asking.send(HEALTHZ.as_bytes()).await.expect("sent");
    asking
        .read_reply(PROMPT)
        .await
        .expect("a 503")
        .assert_error(503, "service_unavailable");

    // The connections held still work.
    served.send(HEALTHZ.as_bytes()).await.expect("sent");
    assert_eq!(served.read_reply(PROMPT).await.expect("answer").status, 200);

    // Once one closes, a new connection is served again.
    drop(idle_one);
    let deadline = Instant::now() + PROMPT;
    loop {
        let mut fresh = server.connect().await;
        fresh.send(HEALTHZ.as_bytes()).await.expect("sent");
        let reply = fresh.read_reply(PROMPT).await.expect("an answer");
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(
            Instant::now() < deadline,
            "the closed connection's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

async fn idle_keep_alive_connections_are_closed(db: TestDb) {
    let idle = Duration::from_millis(400);
    let (server, _app) = serve(&db, options(100, LONG, idle)).await;
    let mut client = server.connect().await;
    client.send(HEALTHZ.as_bytes()).await.expect("sent");
    assert_eq!(client.read_reply(PROMPT).await.expect("answer").status, 200);
    let answered = Instant::now();
    assert!(
        client.closed_within(Duration::from_secs(10)).await,
        "an idle keep-alive connection must be closed after the idle timeout"
    );
    assert!(
        answered.elapsed() >= idle / 2,
        "closed before the idle timeout"
    );

    // The server's own closing is graceful: stop() returns with none left.
    server.stop().await;
}

async fn slow_request_heads_are_cut_off(db: TestDb) {
    let header_read = Duration::from_millis(400);
    let (server, _app) = serve(&db, options(100, header_read, LONG)).await;

    // A client trickling a head that never ends.
    let mut slow = server.connect().await;
    slow.send(b"GET /healthz HTTP/1.1\r\nHost: longhaul.test\r\n")
        .await
        .expect("sent");
    let started = Instant::now();
    let mut cut_off = false;
    while started.elapsed() < Duration::from_secs(10) {
        if slow.send(b"X-Slow: 1\r\n").await.is_err()
            || slow.closed_within(Duration::from_millis(100)).await
        {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a head trickling for 10 s must be cut off");

    // A connection that never sends anything.
    let mut silent = server.connect().await;
    assert!(
        silent.closed_within(Duration::from_secs(10)).await,
        "a silent connection must be closed after the header-read timeout"
    );

    // A prompt client is unaffected.
    let mut prompt = server.connect().await;
    prompt.send(HEALTHZ.as_bytes()).await.expect("sent");
    assert_eq!(prompt.read_reply(PROMPT).await.expect("answer").status, 200);
    server.stop().await;
}

async fn an_announced_oversize_body_is_refused_before_it_is_sent(db: TestDb) {
    let (server, app) = serve(&db, options(100, LONG, LONG)).await;
    let (_, key) = http::tenant_with_admin_key(app.stores.as_ref(), "acme").await;
    let mut client = server.connect().await;
    client
        .send(
            format!(
                "POST /v1/jobs HTTP/1.1\r\nHost: longhaul.test\r\n\
                 Authorization: Bearer {key}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("sent");
    let reply = client
        .read_reply(PROMPT)
        .await
        .expect("a 413 without waiting for the body");
    reply.assert_error(413, "payload_too_large");
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    server.stop().await;
}

async fn heads_past_the_limits_are_answered_in_the_error_format(db: TestDb) {
    let (server, _app) = serve(&db, options(100, LONG, LONG)).await;

    let long_uri = format!(
        "/healthz?pad={}",
        "x".repeat(longhaul_api::limits::MAX_URI_BYTES)
    );
    let mut client = server.connect().await;
    client
        .send(&request("GET", &long_uri, None, &[], None))
        .await
        .expect("sent");
    client
        .read_reply(PROMPT)
        .await
        .expect("an answer")
        .assert_error(414, "uri_too_long");

    let big_header = format!(
        "X-Pad: {}",
        "x".repeat(longhaul_api::limits::MAX_HEADER_BYTES)
    );
    let mut client = server.connect().await;
    client
        .send(&request("GET", "/healthz", None, &[&big_header], None))
        .await
        .expect("sent");
    client
        .read_reply(PROMPT)
        .await
        .expect("an answer")
        .assert_error(431, "headers_too_large");

    // More fields than the limit (and than hyper's own default of 100).
    let fields: Vec<String> = (0..120).map(|i| format!("X-Field-{i}: {i}")).collect();
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let mut client = server.connect().await;
    client
        .send(&request("GET", "/healthz", None, &fields, None))
        .await
        .expect("sent");
    let reply = client.read_reply(PROMPT).await.expect("an answer");
    reply.assert_error(431, "headers_too_large");
    assert_eq!(reply.json()["error"]["details"]["maxFields"], 100);

    // Within the limits: served.
    let mut client = server.connect().await;
    let fine = format!("/healthz?pad={}", "x".repeat(1000));
    client
        .send(&request("GET", &fine, None, &["X-Pad: ok"], None))
        .await
        .expect("sent");
    assert_eq!(client.read_reply(PROMPT).await.expect("answer").status, 200);
    server.stop().await;
}

async fn bodies_sent_to_bodiless_posts_keep_the_connection_alive(db: TestDb) {
    let (server, app) = serve(&db, options(100, LONG, LONG)).await;
    let (_, key) = http::tenant_with_admin_key(app.stores.as_ref(), "acme").await;
    let mut client = server.connect().await;
    client
        .send(&request(
            "POST",
            "/v1/jobs",
            Some(&key),
            &[],
            Some(r#"{"kind":"system.noop","runAt":"2999-01-01T00:00:00Z"}"#),
        ))
        .await
        .expect("sent");
    let created = client.read_reply(PROMPT).await.expect("created");
    assert_eq!(created.status, 202, "{created:?}");
    let job = created.json()["id"].as_str().expect("id").to_string();

    // cancel {} → GET → retry {} → GET, over and over on this one
    // connection; every tenth POST sends its body a moment after its head,
    // so the handler is done before the body arrives.
    for round in 0..300 {
        let (method, path, body, status) = match round % 4 {
            0 => ("POST", format!("/v1/jobs/{job}/cancel"), Some("{}"), 200),
            1 => ("GET", format!("/v1/jobs/{job}"), None, 200),
            2 => ("POST", format!("/v1/jobs/{job}/retry"), Some("{}"), 202),
            _ => ("GET", format!("/v1/jobs/{job}"), None, 200),
        };
        let bytes = request(method, &path, Some(&key), &[], body);
        let late_body = body.is_some() && round % 20 == 0;
        let sent = if late_body {
            let split = bytes.len() - 2;
            let head = client.send(&bytes[..split]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            head.and(client.send(&bytes[split..]).await)
        } else {
            client.send(&bytes).await
        };
        sent.unwrap_or_else(|e| panic!("round {round}: sending failed: {e}"));
        let reply = client
            .read_reply(PROMPT)
            .await
            .unwrap_or_else(|e| panic!("round {round} ({method} {path}): {e}"));
        assert_eq!(reply.status, status, "round {round}: {reply:?}");
    }
    server.stop().await;
}

both_stores!(
    connections_past_the_cap_are_answered_503_at_once,
    idle_keep_alive_connections_are_closed,
    slow_request_heads_are_cut_off,
    an_announced_oversize_body_is_refused_before_it_is_sent,
    heads_past_the_limits_are_answered_in_the_error_format,
    bodies_sent_to_bodiless_posts_keep_the_connection_alive,
);
