//! What one anonymous client can cost the service through what it sends: metric series
//! (from invented HTTP methods) and the size of an error body. The per-user and
//! per-address limits are in `user_limits.rs` and `client_address.rs`.

use reqwest::Method;

use crate::support::harness::TestApp;

#[tokio::test]
async fn invented_http_methods_add_no_metric_series() {
    // Goal: requests with made-up (and huge) HTTP methods are counted under `method="other"`, so no client
    // can add series to /metrics or grow the api's memory with them.
    let app = TestApp::spawn().await;
    for index in 0..20 {
        let method = Method::from_bytes(format!("INVENTED{index}{}", "X".repeat(10_000)).as_bytes()).unwrap();
        let response = app.client.request(method, app.url("/events")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 405, "a known path with an unknown method");
    }
    let page = app.get("/metrics", None).await.text().await.unwrap();
    assert!(!page.contains("INVENTED"), "no method of a client is a label value");
    let other = page
        .lines()
        .filter(|line| line.starts_with("http_requests_total{") && line.contains(r#"method="other""#))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>();
    assert_eq!(other, 20.0, "every invented method is counted as `other`:\n{page}");
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_bad_query_parameters_gets_a_short_422() {
    // Goal: a 60 KB query string of unknown parameters gets a 422 that lists at most 20 errors, cuts long field
    // names, and says in `detail` how many rules were broken, instead of echoing megabytes.
    let app = TestApp::spawn().await;
    let query: Vec<String> = (0..6000).map(|index| format!("p{index}=1")).collect();
    let long_name = "n".repeat(5000);
    let response = app.get(&format!("/events?{long_name}=1&{}", query.join("&")), None).await;
    let body = crate::support::harness::assert_problem(response, 422, "validation_failed").await;
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), stampede::validation::ERRORS_LISTED_MAX);
    let first = errors[0]["field"].as_str().unwrap();
    assert_eq!(first.chars().count(), stampede::validation::FIELD_NAME_LISTED_MAX + 1, "the long name is cut");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("6001 rules") && detail.contains("first 20"), "{detail}");
    assert!(body.to_string().len() < 8 * 1024, "a short body: {} bytes", body.to_string().len());
    app.stop().await;
}
