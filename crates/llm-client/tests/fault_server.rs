//! ChatClient against a loopback fault server: which failures are retried (429 with
//! Retry-After, 5xx, timeouts, dropped connections) and which are final (401, 400, malformed and
//! empty answers, no server), the cache replaying without the network and never storing a
//! failure, the concurrency bound and the order of `chat_many`.

mod support;

use std::time::{Duration, Instant};

use llm_client::wire::ChatMessage;
use llm_client::{CallCache, CallStats, ChatClient, ClientError, Endpoint, Sampling};
use support::{Canned, FaultServer, dead_url};

/// An endpoint with fast retries (1 ms base backoff) and a 5 s timeout.
fn endpoint(base_url: &str) -> Endpoint {
    Endpoint {
        timeout_s: 5.0,
        max_retries: 3,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        ..Endpoint::new(base_url, "m")
    }
}

fn ask(client: &ChatClient, q: &str) -> llm_client::Result<llm_client::Completion> {
    client.chat(&[ChatMessage::user(q)], &Sampling::greedy(8))
}

#[test]
fn answers_and_sends_the_openai_request() {
    let server = FaultServer::start(vec![Canned::ok("four")]);
    let client = ChatClient::new("teacher", endpoint(&server.base_url)).unwrap();
    let c = client
        .chat(
            &[ChatMessage::system("be brief"), ChatMessage::user("2+2?")],
            &Sampling {
                stop: vec!["\n".into()],
                seed: Some(3),
                ..Sampling::greedy(8)
            },
        )
        .unwrap();
    assert_eq!(
        (c.text.as_str(), c.finish_reason.as_str(), c.cached),
        ("four", "stop", false)
    );
    let request = &server.requests()[0];
    assert!(
        request.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{request}"
    );
    let body: serde_json::Value =
        serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["model"], "m");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["max_tokens"], 8);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["stop"], serde_json::json!(["\n"]));
    assert_eq!(body["seed"], 3);
    assert!(!request.to_ascii_lowercase().contains("authorization"));
}

#[test]
fn a_429_waits_retry_after_then_succeeds() {
    let server = FaultServer::start(vec![
        Canned::status(
            429,
            r#"{"error":{"message":"slow down","type":"rate_limit"}}"#,
        )
        .header("Retry-After", "1"),
        Canned::ok("done"),
    ]);
    // a zero backoff: only Retry-After can explain a wait of a second
    let client = ChatClient::new(
        "judge",
        Endpoint {
            backoff_base_ms: 0,
            backoff_max_ms: 0,
            ..endpoint(&server.base_url)
        },
    )
    .unwrap();
    let start = Instant::now();
    assert_eq!(ask(&client, "q").unwrap().text, "done");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert_eq!(server.hits(), 2);
    assert_eq!(client.stats().retries, 1);
}

#[test]
fn a_500_is_retried() {
    let server = FaultServer::start(vec![Canned::status(500, "boom"), Canned::ok("fine")]);
    let client = ChatClient::new("teacher", endpoint(&server.base_url)).unwrap();
    assert_eq!(ask(&client, "q").unwrap().text, "fine");
    assert_eq!(server.hits(), 2);
    assert_eq!(
        client.stats(),
        CallStats {
            calls: 1,
            cached: 0,
            failed: 0,
            retries: 1
        }
    );
}

#[test]
fn retries_run_out_with_the_last_error_kept() {
    let server = FaultServer::start(vec![Canned::status(503, "overloaded")]);
    let client = ChatClient::new(
        "teacher",
        Endpoint {
            max_retries: 2,
            ..endpoint(&server.base_url)
        },
    )
    .unwrap();
    let e = ask(&client, "q").unwrap_err();
    let ClientError::RetriesExhausted { attempts, last, .. } = &e else {
        panic!("expected RetriesExhausted, found {e:?}")
    };
    assert_eq!(*attempts, 3);
    assert!(matches!(**last, ClientError::Status { status: 503, .. }));
    assert_eq!(e.status(), Some(503));
    assert_eq!(server.hits(), 3);
    assert_eq!(client.stats().failed, 1);
}

#[test]
fn a_slow_answer_times_out_and_is_retried() {
    let slow = Canned::ok("late").delayed(Duration::from_millis(1500));
    let server = FaultServer::start(vec![slow.clone(), Canned::ok("quick")]);
    let quick = Endpoint {
        timeout_s: 0.4,
        ..endpoint(&server.base_url)
    };
    let client = ChatClient::new("teacher", quick.clone()).unwrap();
    assert_eq!(ask(&client, "q").unwrap().text, "quick");
    assert_eq!(client.stats().retries, 1);

    // without retries the timeout is the error, naming the role, URL and seconds
    let server = FaultServer::start(vec![slow]);
    let client = ChatClient::new(
        "teacher",
        Endpoint {
            max_retries: 0,
            base_url: server.base_url.clone(),
            ..quick
        },
    )
    .unwrap();
    let start = Instant::now();
    let e = ask(&client, "q").unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    assert!(start.elapsed() < Duration::from_millis(1400));
    let msg = e.to_string();
    assert!(
        msg.contains("teacher") && msg.contains(&server.base_url) && msg.contains("0.4"),
        "{msg}"
    );
}

#[test]
fn a_dropped_connection_is_retried() {
    let server = FaultServer::start(vec![Canned::hang_up(), Canned::ok("back")]);
    let client = ChatClient::new("teacher", endpoint(&server.base_url)).unwrap();
    assert_eq!(ask(&client, "q").unwrap().text, "back");
    assert_eq!(server.hits(), 2);
}

#[test]
fn malformed_json_is_final() {
    let server = FaultServer::start(vec![Canned::status(200, "{not json"), Canned::ok("x")]);
    let client = ChatClient::new("judge", endpoint(&server.base_url)).unwrap();
    let e = ask(&client, "q").unwrap_err();
    assert!(matches!(e, ClientError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("{not json"), "{e}");
    assert_eq!(server.hits(), 1);
}

#[test]
fn unauthorized_is_never_retried() {
    let server = FaultServer::start(vec![
        Canned::status(
            401,
            r#"{"error":{"message":"Incorrect API key","type":"auth"}}"#,
        ),
        Canned::ok("x"),
    ]);
    let client = ChatClient::new("judge", endpoint(&server.base_url)).unwrap();
    let e = ask(&client, "q").unwrap_err();
    assert!(
        matches!(e, ClientError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("api_key_env") && msg.contains("Incorrect API key"),
        "{msg}"
    );
    assert_eq!(server.hits(), 1);
    assert_eq!(client.stats().retries, 0);
}

#[test]
fn other_4xx_are_final_with_the_servers_message() {
    let server = FaultServer::start(vec![
        Canned::status(
            400,
            r#"{"error":{"message":"top_p must be in (0, 1]","type":"invalid_request_error","param":"top_p"}}"#,
        ),
        Canned::ok("x"),
    ]);
    let client = ChatClient::new("judge", endpoint(&server.base_url)).unwrap();
    let e = ask(&client, "q").unwrap_err();
    assert!(
        matches!(e, ClientError::Status { status: 400, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("top_p must be in (0, 1]"), "{e}");
    assert_eq!(server.hits(), 1);
}

#[test]
fn an_empty_message_is_an_error() {
    let server = FaultServer::start(vec![Canned::ok("  ")]);
    let client = ChatClient::new("teacher", endpoint(&server.base_url)).unwrap();
    let e = ask(&client, "q").unwrap_err();
    assert!(matches!(e, ClientError::EmptyResponse { .. }), "{e:?}");
    let server = FaultServer::start(vec![Canned::status(200, r#"{"choices":[]}"#)]);
    let client = ChatClient::new("teacher", endpoint(&server.base_url)).unwrap();
    assert!(matches!(
        ask(&client, "q").unwrap_err(),
        ClientError::EmptyResponse { .. }
    ));
}

#[test]
fn no_server_is_unreachable_at_once() {
    let url = dead_url();
    let client = ChatClient::new("judge", endpoint(&url)).unwrap();
    let e = ask(&client, "q").unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("judge") && msg.contains(&url), "{msg}");
    assert_eq!(client.stats().retries, 0);
}

#[test]
fn the_cache_replays_without_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let server = FaultServer::start(vec![Canned::echo()]);
    let cache = CallCache::open(dir.path()).unwrap();
    let client = ChatClient::new("teacher", endpoint(&server.base_url))
        .unwrap()
        .with_cache(cache.clone());
    assert_eq!(ask(&client, "first").unwrap().text, "first");
    assert_eq!(ask(&client, "first").unwrap().text, "first");
    assert_eq!(server.hits(), 1);
    assert_eq!(cache.len(), 1);

    // a new process (new client) on the same directory, with the server gone
    let offline = ChatClient::new("teacher", endpoint(&dead_url()))
        .unwrap()
        .with_cache(CallCache::open(dir.path()).unwrap());
    let replay = ask(&offline, "first").unwrap();
    assert_eq!((replay.text.as_str(), replay.cached), ("first", true));
    assert_eq!(
        offline.stats(),
        CallStats {
            calls: 0,
            cached: 1,
            failed: 0,
            retries: 0
        }
    );
    // a different call is not in the cache: it goes to the (dead) network
    assert!(ask(&offline, "second").is_err());
    // nor are other sampling settings of the same messages
    assert!(
        offline
            .chat(&[ChatMessage::user("first")], &Sampling::greedy(9))
            .is_err()
    );
}

#[test]
fn failures_are_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let failing = FaultServer::start(vec![Canned::status(500, "down")]);
    let client = ChatClient::new(
        "teacher",
        Endpoint {
            max_retries: 1,
            ..endpoint(&failing.base_url)
        },
    )
    .unwrap()
    .with_cache(CallCache::open(dir.path()).unwrap());
    assert!(ask(&client, "q").is_err());
    let empty = FaultServer::start(vec![Canned::ok("")]);
    let client2 = ChatClient::new("teacher", endpoint(&empty.base_url))
        .unwrap()
        .with_cache(CallCache::open(dir.path()).unwrap());
    assert!(ask(&client2, "q").is_err());
    assert!(CallCache::open(dir.path()).unwrap().is_empty());

    // once the server answers, the call is made (not replayed) and then cached
    let ok = FaultServer::start(vec![Canned::ok("up")]);
    let client = ChatClient::new("teacher", endpoint(&ok.base_url))
        .unwrap()
        .with_cache(CallCache::open(dir.path()).unwrap());
    assert_eq!(ask(&client, "q").unwrap().text, "up");
    assert_eq!((client.stats().calls, ok.hits()), (1, 1));
    assert_eq!(CallCache::open(dir.path()).unwrap().len(), 1);
}

#[test]
fn chat_many_bounds_concurrency_and_keeps_order() {
    let server = FaultServer::start(vec![Canned::echo().delayed(Duration::from_millis(80))]);
    let client = ChatClient::new(
        "teacher",
        Endpoint {
            max_concurrency: 3,
            ..endpoint(&server.base_url)
        },
    )
    .unwrap();
    let requests: Vec<_> = (0..12)
        .map(|i| {
            (
                vec![ChatMessage::user(format!("q{i}"))],
                Sampling::greedy(4),
            )
        })
        .collect();
    let answers = client.chat_many(&requests);
    let texts: Vec<String> = answers.into_iter().map(|a| a.unwrap().text).collect();
    assert_eq!(texts, (0..12).map(|i| format!("q{i}")).collect::<Vec<_>>());
    assert_eq!(server.hits(), 12);
    let peak = server.peak();
    assert!((2..=3).contains(&peak), "{peak} calls in flight at once");

    // the bound holds across threads sharing clones of one client, too
    let server = FaultServer::start(vec![Canned::echo().delayed(Duration::from_millis(60))]);
    let client = ChatClient::new(
        "teacher",
        Endpoint {
            max_concurrency: 2,
            ..endpoint(&server.base_url)
        },
    )
    .unwrap();
    std::thread::scope(|s| {
        for t in 0..3 {
            let client = client.clone();
            s.spawn(move || {
                for i in 0..3 {
                    assert_eq!(
                        ask(&client, &format!("t{t}-{i}")).unwrap().text,
                        format!("t{t}-{i}")
                    );
                }
            });
        }
    });
    assert_eq!(server.hits(), 9);
    assert!(server.peak() <= 2, "{} in flight", server.peak());
    assert_eq!(client.stats().calls, 9);
}

#[test]
fn chat_many_reports_each_failure_in_place() {
    let server = FaultServer::start(vec![
        Canned::echo(),
        Canned::status(400, "no"),
        Canned::echo(),
    ]);
    let client = ChatClient::new(
        "teacher",
        Endpoint {
            max_concurrency: 1,
            ..endpoint(&server.base_url)
        },
    )
    .unwrap();
    let requests: Vec<_> = (0..3)
        .map(|i| {
            (
                vec![ChatMessage::user(format!("q{i}"))],
                Sampling::greedy(4),
            )
        })
        .collect();
    let answers = client.chat_many(&requests);
    assert_eq!(answers[0].as_ref().unwrap().text, "q0");
    assert!(answers[1].is_err());
    assert_eq!(answers[2].as_ref().unwrap().text, "q2");
    assert!(client.chat_many(&[]).is_empty());
}

#[test]
fn check_model_reads_the_model_list() {
    let list =
        r#"{"object":"list","data":[{"id":"m","object":"model","owned_by":"x"},{"id":"other"}]}"#;
    let server = FaultServer::start(vec![Canned::status(503, "busy"), Canned::status(200, list)]);
    let client = ChatClient::new("judge", endpoint(&server.base_url)).unwrap();
    // retried like a chat call, and sent to GET /v1/models
    client.check_model().unwrap();
    let requests = server.requests();
    assert!(
        requests[1].starts_with("GET /v1/models HTTP/1.1\r\n"),
        "{}",
        requests[1]
    );
    let wrong = ChatClient::new(
        "judge",
        Endpoint {
            model: "gpt-x".into(),
            ..endpoint(&server.base_url)
        },
    )
    .unwrap();
    let e = wrong.check_model().unwrap_err();
    assert!(matches!(e, ClientError::UnknownModel { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("gpt-x") && msg.contains("\"other\""), "{msg}");
    // an endpoint that answers something else is malformed, not a model list
    let html = FaultServer::start(vec![Canned::status(200, "<html>")]);
    let client = ChatClient::new("judge", endpoint(&html.base_url)).unwrap();
    assert!(matches!(
        client.check_model().unwrap_err(),
        ClientError::Malformed { .. }
    ));
    // no server: unreachable, naming the models URL
    let url = dead_url();
    let e = ChatClient::new("judge", endpoint(&url))
        .unwrap()
        .check_model()
        .unwrap_err();
    assert!(e.to_string().contains(&format!("{url}/models")), "{e}");
}
