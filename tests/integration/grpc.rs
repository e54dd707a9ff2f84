//! The gRPC front against the real api: every RPC, the contract's error table with its
//! `ErrorInfo` reasons, idempotent replays, a flash sale over gRPC and HTTP at once,
//! the availability stream, health, reflection, message limits and client deadlines.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use serde_json::json;
use stampede::grpc::proto;
use stampede::grpc::proto::stampede_admin_client::StampedeAdminClient;
use stampede::grpc::proto::stampede_client::StampedeClient;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::support::harness::{TestApp, admin_token, unique_name, user_token};

async fn spawn(extra: &[&str]) -> (TestApp, Channel) {
    let mut flags = vec!["--grpc-listen-addr", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    let app = TestApp::spawn_with(&flags).await;
    let url = app.grpc_url.clone().expect("gRPC is on");
    let channel = Channel::from_shared(url).unwrap().connect().await.expect("gRPC connects");
    (app, channel)
}

/// A request carrying `token` as its bearer token.
fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// Asserts the status code and the `ErrorInfo` reason (the HTTP contract's code).
fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo detail");
    assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason, "stampede"), "{status:?}");
}

async fn create_event(channel: &Channel, sale_window: Option<(i64, i64)>) -> i64 {
    let mut admin = StampedeAdminClient::new(channel.clone());
    let second = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
    let request = proto::CreateEventRequest {
        name: unique_name("event"),
        venue: "Hall".to_owned(),
        starts_at: Some(second(1_893_520_800)),
        sale_starts_at: sale_window.map(|(starts, _)| second(starts)),
        sale_ends_at: sale_window.map(|(_, ends)| second(ends)),
    };
    admin.create_event(authorized(request, &admin_token())).await.expect("event created").into_inner().id
}

async fn create_category(channel: &Channel, event: i64, quota: i64, max_per_user: i64) -> i64 {
    let mut admin = StampedeAdminClient::new(channel.clone());
    let request = proto::CreateCategoryRequest {
        event_id: event,
        name: unique_name("cat"),
        price: 1000,
        quota,
        max_per_user: Some(max_per_user),
        ..Default::default()
    };
    admin.create_category(authorized(request, &admin_token())).await.expect("category created").into_inner().id
}

fn reserve_request(category: i64, quantity: u32) -> proto::ReserveRequest {
    proto::ReserveRequest { category_id: category, quantity, ..Default::default() }
}

async fn reserve(channel: &Channel, user: &str, request: proto::ReserveRequest) -> Result<proto::Reservation, Status> {
    StampedeClient::new(channel.clone()).reserve(authorized(request, &user_token(user))).await.map(|r| r.into_inner())
}

async fn confirm(
    channel: &Channel,
    user: &str,
    id: &str,
    token: &str,
    key: &str,
) -> Result<proto::Reservation, Status> {
    let request = proto::ConfirmRequest {
        reservation_id: id.to_owned(),
        payment: Some(proto::Payment { token: token.to_owned() }),
        idempotency_key: key.to_owned(),
    };
    StampedeClient::new(channel.clone()).confirm(authorized(request, &user_token(user))).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn every_rpc_answers_its_happy_path() {
    // Goal: each RPC of both services answers with the contract's message over the shared engine.
    let (app, channel) = spawn(&[]).await;
    let mut client = StampedeClient::new(channel.clone());
    let mut admin = StampedeAdminClient::new(channel.clone());
    let event = create_event(&channel, None).await;
    let category = create_category(&channel, event, 10, 4).await;
    let fetched = client.get_event(proto::GetEventRequest { event_id: event }).await.unwrap().into_inner();
    assert_eq!((fetched.id, fetched.categories.len()), (event, 1));
    let page = client.list_events(proto::ListEventsRequest { limit: 100, after: None }).await.unwrap().into_inner();
    assert!(page.events.iter().any(|listed| listed.id == event));
    let held = reserve(&channel, "alice", reserve_request(category, 2)).await.unwrap();
    assert_eq!((held.status(), held.quantity, held.amount), (proto::ReservationStatus::Held, 2, 2000));
    let request = proto::GetAvailabilityRequest { event_id: event };
    let levels = client.get_availability(request).await.unwrap().into_inner().categories[0].clone();
    assert_eq!((levels.available, levels.held, levels.sold), (8, 2, 0));
    let read = proto::GetReservationRequest { reservation_id: held.id.clone() };
    let read = client.get_reservation(authorized(read, &user_token("alice"))).await.unwrap().into_inner();
    assert_eq!(read, held);
    let confirmed = confirm(&channel, "alice", &held.id, "tok_ok", "").await.unwrap();
    assert_eq!(confirmed.status(), proto::ReservationStatus::Confirmed);
    assert!(!confirmed.payment_id.is_empty() && confirmed.confirmed_at.is_some());
    let other = reserve(&channel, "alice", reserve_request(category, 1)).await.unwrap();
    let cancel = proto::CancelRequest { reservation_id: other.id.clone() };
    let cancelled = client.cancel(authorized(cancel, &user_token("alice"))).await.unwrap().into_inner();
    assert_eq!(cancelled.status(), proto::ReservationStatus::Cancelled);
    let list = proto::ListReservationsRequest { limit: 0 };
    client.list_reservations(authorized(list, &user_token("alice"))).await.expect("listed from Postgres");
    let room = proto::SetWaitingRoomRequest { event_id: event, enabled: Some(false), ..Default::default() };
    let room = admin.set_waiting_room(authorized(room, &admin_token())).await.unwrap().into_inner();
    assert!(!room.enabled);
    let queue = proto::QueueRequest { event_id: event };
    let joined = client.join_queue(authorized(queue, &user_token("bob"))).await.unwrap().into_inner();
    assert_eq!(joined.status(), proto::QueueState::Admitted, "a room that is off admits at once");
    let polled = client.get_queue_status(authorized(queue, &user_token("bob"))).await.unwrap().into_inner();
    assert_eq!(polled.status(), proto::QueueState::Admitted);
    seats_happy_path(&channel, event).await;
    let levels = app.assert_conserved(category).await;
    assert_eq!((levels.held, levels.sold), (0, 2));
    app.stop().await;
}

async fn seats_happy_path(channel: &Channel, event: i64) {
    let mut admin = StampedeAdminClient::new(channel.clone());
    let request = proto::CreateCategoryRequest {
        event_id: event,
        name: unique_name("seated"),
        price: 500,
        seat_map: vec![proto::SeatRow { row: "A".to_owned(), seats: 4 }],
        ..Default::default()
    };
    let seated = admin.create_category(authorized(request, &admin_token())).await.unwrap().into_inner();
    assert_eq!((seated.quota, seated.seat_map.len()), (4, 1));
    let named = proto::ReserveRequest { category_id: seated.id, seats: vec!["A-2".to_owned()], ..Default::default() };
    let held = reserve(channel, "carol", named).await.unwrap();
    assert_eq!((held.quantity, held.seats.clone()), (1, vec!["A-2".to_owned()]));
    let mut client = StampedeClient::new(channel.clone());
    let map = client.get_seats(proto::GetSeatsRequest { category_id: seated.id }).await.unwrap().into_inner();
    assert_eq!(map.rows[0].taken, vec![2]);
}

#[tokio::test]
async fn every_error_row_carries_its_code_and_reason() {
    // Goal: each row of the contract's gRPC status table, with the HTTP code as ErrorInfo reason.
    let (app, channel) = spawn(&["--payment-latency", "300ms"]).await;
    let mut client = StampedeClient::new(channel.clone());
    let mut admin = StampedeAdminClient::new(channel.clone());
    let event = create_event(&channel, None).await;
    let category = create_category(&channel, event, 3, 2).await;
    let anonymous = client.reserve(reserve_request(category, 1)).await.unwrap_err();
    assert_status(&anonymous, Code::Unauthenticated, "unauthorized");
    let request = proto::CreateEventRequest::default();
    let forbidden = admin.create_event(authorized(request, &user_token("eve"))).await.unwrap_err();
    assert_status(&forbidden, Code::PermissionDenied, "forbidden");
    let missing = client.get_event(proto::GetEventRequest { event_id: 999_999 }).await.unwrap_err();
    assert_status(&missing, Code::NotFound, "not_found");
    let name = unique_name("dup");
    let duplicate = proto::CreateCategoryRequest { event_id: event, name, price: 1, quota: 1, ..Default::default() };
    admin.create_category(authorized(duplicate.clone(), &admin_token())).await.unwrap();
    let exists = admin.create_category(authorized(duplicate, &admin_token())).await.unwrap_err();
    assert_status(&exists, Code::AlreadyExists, "already_exists");
    let invalid = reserve(&channel, "dan", reserve_request(category, 0)).await.unwrap_err();
    assert_status(&invalid, Code::InvalidArgument, "validation_failed");
    let violations = invalid.get_details_bad_request().expect("a BadRequest detail").field_violations;
    assert_eq!(violations[0].field, "quantity");
    assert_status(
        &reserve(&channel, "dan", reserve_request(category, 3)).await.unwrap_err(),
        Code::FailedPrecondition,
        "limit_exceeded",
    );
    let keyed =
        |quantity| proto::ReserveRequest { idempotency_key: "k-1".to_owned(), ..reserve_request(category, quantity) };
    let first = reserve(&channel, "dan", keyed(1)).await.unwrap();
    let reused = reserve(&channel, "dan", keyed(2)).await.unwrap_err();
    assert_status(&reused, Code::InvalidArgument, "idempotency_key_reused");
    reserve(&channel, "erin", reserve_request(category, 2)).await.unwrap();
    let sold_out = reserve(&channel, "fay", reserve_request(category, 1)).await.unwrap_err();
    assert_status(&sold_out, Code::FailedPrecondition, "sold_out");
    let declined = confirm(&channel, "dan", &first.id, "tok_decline", "").await.unwrap_err();
    assert_status(&declined, Code::FailedPrecondition, "payment_declined");
    let failed = confirm(&channel, "dan", &first.id, "tok_fail", "").await.unwrap_err();
    assert_status(&failed, Code::Unavailable, "unavailable");
    assert!(failed.get_details_retry_info().is_some(), "unavailable carries RetryInfo");
    payment_races(&channel, &first.id).await;
    let cancel = proto::CancelRequest { reservation_id: first.id.clone() };
    let not_held = client.cancel(authorized(cancel, &user_token("dan"))).await.unwrap_err();
    assert_status(&not_held, Code::FailedPrecondition, "reservation_not_held");
    app.assert_conserved(category).await;
    app.stop().await;
}

/// Two confirms of one hold at once: with the same key the second is `ABORTED`
/// `idempotency_in_progress`; the first confirms (the payment takes 300 ms).
async fn payment_races(channel: &Channel, id: &str) {
    let (first, second) = tokio::join!(confirm(channel, "dan", id, "tok_ok", "pay-1"), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        confirm(channel, "dan", id, "tok_ok", "pay-1").await
    });
    assert_eq!(first.unwrap().status(), proto::ReservationStatus::Confirmed);
    assert_status(&second.unwrap_err(), Code::Aborted, "idempotency_in_progress");
    let replay = confirm(channel, "dan", id, "tok_ok", "pay-1").await.unwrap();
    assert_eq!(replay.status(), proto::ReservationStatus::Confirmed, "a replay answers the first response");
}

#[tokio::test]
async fn sale_windows_seats_and_queue_passes_refuse_with_their_reasons() {
    // Goal: the remaining refusals of the table: sale windows, seats, queue passes and expired holds.
    let (app, channel) = spawn(&["--hold-ttl", "1s"]).await;
    let future = create_event(&channel, Some((4_102_444_800, 4_102_531_200))).await;
    let early = create_category(&channel, future, 5, 2).await;
    let not_open = reserve(&channel, "gus", reserve_request(early, 1)).await.unwrap_err();
    assert_status(&not_open, Code::FailedPrecondition, "sale_not_open");
    let past = create_event(&channel, Some((946_684_800, 946_771_200))).await;
    let late = create_category(&channel, past, 5, 2).await;
    let closed = reserve(&channel, "gus", reserve_request(late, 1)).await.unwrap_err();
    assert_status(&closed, Code::FailedPrecondition, "sale_closed");
    let event = create_event(&channel, None).await;
    let mut admin = StampedeAdminClient::new(channel.clone());
    let rows = vec![proto::SeatRow { row: "A".to_owned(), seats: 3 }, proto::SeatRow { row: "B".to_owned(), seats: 3 }];
    let request = proto::CreateCategoryRequest {
        event_id: event,
        name: unique_name("seated"),
        price: 1,
        seat_map: rows,
        max_per_user: Some(3),
        ..Default::default()
    };
    let seated = admin.create_category(authorized(request, &admin_token())).await.unwrap().into_inner().id;
    let named = |seats: &[&str]| proto::ReserveRequest {
        category_id: seated,
        seats: seats.iter().map(|seat| seat.to_string()).collect(),
        ..Default::default()
    };
    let held = reserve(&channel, "hal", named(&["A-2", "B-2"])).await.unwrap();
    let taken = reserve(&channel, "ivy", named(&["A-1", "A-2"])).await.unwrap_err();
    assert_status(&taken, Code::FailedPrecondition, "seat_taken");
    assert_eq!(taken.get_details_error_info().unwrap().metadata["seats"], "A-2");
    let adjacent = proto::ReserveRequest { category_id: seated, quantity: 2, adjacent: true, ..Default::default() };
    let no_run = reserve(&channel, "ivy", adjacent).await.unwrap_err();
    assert_status(&no_run, Code::FailedPrecondition, "no_adjacent_seats");
    let room = proto::SetWaitingRoomRequest { event_id: event, enabled: Some(true), ..Default::default() };
    admin.set_waiting_room(authorized(room, &admin_token())).await.unwrap();
    let no_pass = reserve(&channel, "ivy", named(&["A-3"])).await.unwrap_err();
    assert_status(&no_pass, Code::PermissionDenied, "queue_pass_required");
    // Why a sleep: the test needs the hold's deadline to have passed, not an event.
    let deadline = held.expires_at.unwrap();
    let deadline_ms = u64::try_from(deadline.seconds * 1000 + i64::from(deadline.nanos / 1_000_000)).unwrap();
    let now_ms =
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    tokio::time::sleep(Duration::from_millis(deadline_ms.saturating_sub(now_ms) + 50)).await;
    let expired = confirm(&channel, "hal", &held.id, "tok_ok", "").await.unwrap_err();
    assert_status(&expired, Code::FailedPrecondition, "reservation_expired");
    app.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_resource_exhausted_with_retry_info() {
    // Goal: the per-address limit is shared with HTTP and answers RESOURCE_EXHAUSTED rate_limited with RetryInfo.
    let (app, channel) = spawn(&["--rate-limit-per-ip-per-second", "1"]).await;
    let request = || proto::GetReservationRequest { reservation_id: uuid::Uuid::new_v4().to_string() };
    let mut client = StampedeClient::new(channel.clone());
    let mut last = None;
    for _ in 0..3 {
        last = client.get_reservation(authorized(request(), &user_token("kim"))).await.err();
    }
    let limited = last.expect("refused");
    assert_status(&limited, Code::ResourceExhausted, "rate_limited");
    assert!(limited.get_details_retry_info().unwrap().retry_delay.is_some());
    app.stop().await;
}

#[tokio::test]
async fn idempotent_reserves_replay_the_first_answer() {
    // Goal: the same idempotency key and request from the same user answers the first reservation again.
    let (app, channel) = spawn(&[]).await;
    let event = create_event(&channel, None).await;
    let category = create_category(&channel, event, 10, 5).await;
    let keyed = proto::ReserveRequest { idempotency_key: "order-7".to_owned(), ..reserve_request(category, 2) };
    let first = reserve(&channel, "lee", keyed.clone()).await.unwrap();
    let again = reserve(&channel, "lee", keyed).await.unwrap();
    assert_eq!(first, again);
    let levels = app.assert_conserved(category).await;
    assert_eq!(levels.held, 2, "the replay created nothing");
    app.stop().await;
}

#[tokio::test]
async fn a_flash_sale_over_grpc_and_http_sells_exactly_the_quota() {
    // Goal: buyers over both fronts compete for the same tickets, and exactly the quota is held.
    let (app, channel) = spawn(&[]).await;
    let event = create_event(&channel, None).await;
    let quota = 40;
    let category = create_category(&channel, event, quota, 1).await;
    // Every buyer waits at the barrier, so both fronts' calls arrive together.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let grpc_buyers = (0..50).map(|index| {
        let (channel, start) = (channel.clone(), start.clone());
        tokio::spawn(async move {
            start.wait().await;
            match reserve(&channel, &format!("g{index}"), reserve_request(category, 1)).await {
                Ok(_) => true,
                Err(status) => {
                    assert_status(&status, Code::FailedPrecondition, "sold_out");
                    false
                }
            }
        })
    });
    let http_buyers = (0..50).map(|index| {
        let (client, url, start) = (app.client.clone(), app.url("/reserve"), start.clone());
        tokio::spawn(async move {
            start.wait().await;
            let response = client
                .post(url)
                .bearer_auth(user_token(&format!("h{index}")))
                .json(&json!({"category_id": category, "quantity": 1}))
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                201 => true,
                status => {
                    assert_eq!(status, 409, "held or sold out");
                    false
                }
            }
        })
    });
    let (grpc_buyers, http_buyers): (Vec<_>, Vec<_>) = (grpc_buyers.collect(), http_buyers.collect());
    let (mut grpc_held, mut http_held) = (0, 0);
    for buyer in grpc_buyers {
        grpc_held += i64::from(buyer.await.unwrap());
    }
    for buyer in http_buyers {
        http_held += i64::from(buyer.await.unwrap());
    }
    assert_eq!(grpc_held + http_held, quota, "gRPC {grpc_held} + HTTP {http_held}");
    let levels = app.assert_conserved(category).await;
    assert_eq!((levels.available, levels.held), (0, quota));
    app.stop().await;
}

#[tokio::test]
async fn watch_availability_follows_a_change_within_500_ms() {
    // Goal: the stream sends the state at once, then a reserve's effect within 500 ms.
    let (app, channel) = spawn(&[]).await;
    let event = create_event(&channel, None).await;
    let category = create_category(&channel, event, 10, 5).await;
    let mut client = StampedeClient::new(channel.clone());
    let mut stream =
        client.watch_availability(proto::GetAvailabilityRequest { event_id: event }).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.categories[0].available, 10);
    let sent = Instant::now();
    reserve(&channel, "max", reserve_request(category, 3)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await.expect("within 500 ms");
    let next = next.unwrap().unwrap();
    assert_eq!((next.categories[0].available, next.categories[0].held), (7, 3), "after {:?}", sent.elapsed());
    let unknown = client.watch_availability(proto::GetAvailabilityRequest { event_id: 999_999 }).await.unwrap_err();
    assert_status(&unknown, Code::NotFound, "not_found");
    app.stop().await;
}

#[tokio::test]
async fn health_serves_while_ready_and_flips_at_shutdown() {
    // Goal: grpc.health.v1 answers SERVING for the server and each service, and NOT_SERVING from the stop.
    let (app, channel) = spawn(&["--shutdown-readiness-delay", "3s"]).await;
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = |service: &str| tonic_health::pb::HealthCheckRequest { service: service.to_owned() };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    // The first readiness probe runs as the server starts; wait for its report.
    for service in ["", "stampede.v1.Stampede", "stampede.v1.StampedeAdmin"] {
        crate::support::harness::wait_until(Duration::from_secs(5), "health reports SERVING", || {
            let mut health = health.clone();
            async move { health.check(check(service)).await.ok().map(|answer| answer.into_inner().status) == Some(serving) }
        })
        .await;
    }
    app.shutdown.cancel();
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    crate::support::harness::wait_until(Duration::from_secs(2), "health turns NOT_SERVING", || {
        let mut health = health.clone();
        async move { health.check(check("")).await.ok().map(|answer| answer.into_inner().status) == Some(not_serving) }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services() {
    // Goal: server reflection v1 names both Stampede services, health and reflection itself.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let (app, channel) = spawn(&[]).await;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    for expected in ["stampede.v1.Stampede", "stampede.v1.StampedeAdmin", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|name| name == expected), "{names:?}");
    }
    app.stop().await;
}

/// Sends raw bytes as a call's message, to reach the server with what no generated client sends.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, buffer: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buffer.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buffer.copy_to_bytes(buffer.remaining())))
    }
}

async fn raw_call(channel: &Channel, path: &'static str, message: Bytes) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(Request::new(message), path, RawCodec).await.expect_err("refused")
}

#[tokio::test]
async fn malformed_oversized_and_unknown_calls_get_the_contract_codes() {
    // Goal: a malformed message is INVALID_ARGUMENT, one over the size limit RESOURCE_EXHAUSTED, an unknown method UNIMPLEMENTED.
    let (app, channel) = spawn(&["--grpc-message-size-max", "4096"]).await;
    let malformed = raw_call(&channel, "/stampede.v1.Stampede/GetEvent", Bytes::from_static(&[0xff, 0xff, 0xff])).await;
    assert_status(&malformed, Code::InvalidArgument, "invalid_json");
    let oversized = proto::ReserveRequest { category_id: 1, seats: vec!["A".repeat(8192)], ..Default::default() };
    let status = reserve(&channel, "ned", oversized).await.unwrap_err();
    assert_status(&status, Code::ResourceExhausted, "payload_too_large");
    let unknown = raw_call(&channel, "/stampede.v1.Stampede/Teleport", Bytes::new()).await;
    assert_eq!(unknown.code(), Code::Unimplemented);
    let unknown = raw_call(&channel, "/stampede.v9.Nothing/Here", Bytes::new()).await;
    assert_eq!(unknown.code(), Code::Unimplemented);
    app.stop().await;
}

#[tokio::test]
async fn a_client_deadline_ends_its_wait_but_a_sent_reserve_is_decided_and_counted() {
    // Goal: calls whose deadline passes answer at once, and every reserve that reached Redis stays counted: stock is conserved.
    let (app, channel) = spawn(&[]).await;
    let event = create_event(&channel, None).await;
    let quota = 200;
    let category = create_category(&channel, event, quota, 1).await;
    let buyers = (0..100).map(|index| {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut request = authorized(reserve_request(category, 1), &user_token(&format!("d{index}")));
            request.set_timeout(Duration::from_micros(500 + index * 20));
            let started = Instant::now();
            let answer = StampedeClient::new(channel).reserve(request).await;
            (answer.map(|_| ()).map_err(|status| status.code()), started.elapsed())
        })
    });
    let mut refused = 0;
    for buyer in buyers.collect::<Vec<_>>() {
        let (answer, took) = buyer.await.unwrap();
        if let Err(code) = answer {
            assert!(matches!(code, Code::DeadlineExceeded | Code::Cancelled), "{code:?}");
            assert!(took < Duration::from_secs(2), "the deadline ended the wait: {took:?}");
            refused += 1;
        }
    }
    assert!(refused > 0, "some deadlines passed before the answer");
    // A reserve that reached Redis before its deadline is still decided: wait until the
    // levels are still, then every held ticket has its hold record.
    let keys = app.keys();
    crate::support::harness::wait_until(Duration::from_secs(5), "holds match the levels", || {
        let (app, keys) = (&app, keys.clone());
        async move {
            let levels = app.assert_conserved(category).await;
            let id = stampede::ids::CategoryId::new(category).unwrap();
            let pattern = format!("{}*", keys.hold_prefix(id));
            let holds = crate::support::harness::keys_matching(&pattern).await.unwrap().len();
            i64::try_from(holds).unwrap() == levels.held
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_call_in_flight_finish() {
    // Goal: on shutdown the gRPC server stops taking calls but a confirm already running completes.
    let (app, channel) = spawn(&["--payment-latency", "800ms"]).await;
    let event = create_event(&channel, None).await;
    let category = create_category(&channel, event, 5, 2).await;
    let held = reserve(&channel, "ola", reserve_request(category, 1)).await.unwrap();
    let paying = tokio::spawn({
        let (channel, id) = (channel.clone(), held.id.clone());
        async move { confirm(&channel, "ola", &id, "tok_ok", "").await }
    });
    // The confirm is in flight once its hold reads as paying in Redis.
    crate::support::reservation::wait_until_paying(&app, &held.id).await;
    app.shutdown.cancel();
    let confirmed = paying.await.unwrap().expect("the call in flight finishes");
    assert_eq!(confirmed.status(), proto::ReservationStatus::Confirmed);
    app.stop().await;
}
