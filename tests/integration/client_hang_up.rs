//! A client that hangs up after sending its request does not cut the request short:
//! the reservation it asked for is made and counted.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::support::api_process::{read_address, spawn_api};
use crate::support::harness::{TestApp, metric_value, user_token};
use crate::support::reservation::{levels, sale};

const HELD_METRIC: &str = r#"reservation_outcomes_total{operation="reserve",outcome="held"}"#;

#[tokio::test]
async fn a_reserve_whose_client_hung_up_is_held_and_counted() {
    // Goal: reserves sent by clients that close their socket right after the request still hold their tickets and are counted in reservation_outcomes_total.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 100, 100).await;
    // A process of its own, so its /metrics counts only this test's requests.
    let mut api = spawn_api(&app.isolation, true, &[]);
    let (address, _) = read_address(&mut api, 0);
    let body = json!({"category_id": category, "quantity": 1}).to_string();
    let hang_ups: i64 = 10;
    for user in 0..hang_ups {
        let request = format!(
            "POST /reserve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            user_token(&format!("gone-{user}")),
            body.len()
        );
        let mut stream = TcpStream::connect(&address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        drop(stream);
    }

    let metrics_url = format!("http://{address}/metrics");
    let started = std::time::Instant::now();
    let mut counted = 0.0;
    while started.elapsed() < Duration::from_secs(5) {
        let page = app.client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        counted = metric_value(&page, HELD_METRIC);
        if counted >= hang_ups as f64 && levels(&app, category).await.held == hang_ups {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = levels(&app, category).await.held;
    api.kill().unwrap();
    api.wait().unwrap();
    assert_eq!((held, counted), (hang_ups, hang_ups as f64), "(tickets held, reserves counted) of {hang_ups} hang-ups");
    app.stop().await;
}
