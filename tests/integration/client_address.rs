//! Which address a request counts under: the peer, or behind a trusted proxy
//! (`TRUSTED_PROXIES`) the right-most untrusted `X-Forwarded-For` address; and the
//! limits per client address (`STREAMS_PER_CLIENT_MAX`, `RATE_LIMIT_PER_IP_PER_SECOND`).
//! The app listens on 127.0.0.1 and trusts only 127.0.0.1 as a proxy; a client bound to
//! 127.0.0.2 is an untrusted peer.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::{Client, Response};

use crate::support::harness::{TestApp, assert_problem, wait_until};

/// The proxy the app trusts, and a peer it does not.
const PROXY: &str = "127.0.0.1";
const STRANGER: &str = "127.0.0.2";

fn client_from(address: &str) -> Client {
    let address: IpAddr = address.parse().unwrap();
    Client::builder().local_address(address).timeout(Duration::from_secs(30)).build().unwrap()
}

async fn open_stream(app: &TestApp, client: &Client, event: i64, forwarded_for: &str) -> Response {
    let url = app.url(&format!("/events/{event}/availability/stream"));
    client.get(url).header("x-forwarded-for", forwarded_for).send().await.unwrap()
}

#[tokio::test]
async fn streams_per_client_count_the_peer_unless_it_is_a_trusted_proxy() {
    // Goal: with STREAMS_PER_CLIENT_MAX=2, an untrusted peer gets its third stream refused (429 with Retry-After)
    // whatever X-Forwarded-For it invents, while behind the trusted proxy each forwarded client has its own two
    // streams; a closed stream gives its slot back.
    // A keep-alive every second: a stream notices its client hung up at its next write.
    let flags = ["--trusted-proxies", PROXY, "--streams-per-client-max", "2", "--stream-keep-alive-interval", "1s"];
    let app = TestApp::spawn_with(&flags).await;
    let event = app.create_event().await;
    let stranger = client_from(STRANGER);
    let mut held = Vec::new();
    for spoofed in ["198.51.100.1", "198.51.100.2"] {
        let response = open_stream(&app, &stranger, event, spoofed).await;
        assert_eq!(response.status().as_u16(), 200);
        held.push(response);
    }
    let refused = open_stream(&app, &stranger, event, "198.51.100.3").await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 429, "rate_limited").await;

    let proxy = client_from(PROXY);
    for _ in 0..2 {
        let response = open_stream(&app, &proxy, event, "6.6.6.6, 203.0.113.1").await;
        assert_eq!(response.status().as_u16(), 200, "each forwarded client has its own streams");
        held.push(response);
    }
    let refused = open_stream(&app, &proxy, event, "203.0.113.1").await;
    assert_problem(refused, 429, "rate_limited").await;
    let other = open_stream(&app, &proxy, event, "203.0.113.2").await;
    assert_eq!(other.status().as_u16(), 200, "another client behind the same proxy");

    drop(held.remove(0));
    wait_until(Duration::from_secs(20), "the closed stream's slot is given back", || async {
        let response = open_stream(&app, &stranger, event, "198.51.100.9").await;
        response.status().as_u16() == 200
    })
    .await;
    drop((held, other));
    app.stop().await;
}

#[tokio::test]
async fn the_per_ip_limit_ignores_a_spoofed_forwarded_for_and_uses_a_trusted_one() {
    // Goal: RATE_LIMIT_PER_IP_PER_SECOND counts an untrusted peer under its own address however its
    // X-Forwarded-For changes, and counts the clients behind the trusted proxy apart.
    let app = TestApp::spawn_with(&["--trusted-proxies", PROXY, "--rate-limit-per-ip-per-second", "1"]).await;
    let url = app.url("/reservations/00000000-0000-0000-0000-000000000000");
    let stranger = client_from(STRANGER);
    let mut statuses = Vec::new();
    for index in 0..5 {
        let response = stranger.get(&url).header("x-forwarded-for", format!("198.51.100.{index}")).send().await;
        statuses.push(response.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&429), "the stranger is limited under its own address: {statuses:?}");

    let proxy = client_from(PROXY);
    for index in 0..5 {
        let response = proxy.get(&url).header("x-forwarded-for", format!("203.0.113.{index}")).send().await;
        let status = response.unwrap().status().as_u16();
        assert_eq!(status, 401, "each forwarded client has its own bucket (then needs a token)");
    }
    app.stop().await;
}
