//! The API key: read from the variable named by `api_key_env`, sent as a bearer token, and named
//! (never shown) when the server refuses it. Its own test binary, because it sets a variable.

mod support;

use llm_client::wire::ChatMessage;
use llm_client::{ChatClient, ClientError, Endpoint, Sampling};
use support::{Canned, FaultServer};

#[test]
fn the_key_is_sent_as_a_bearer_token_and_a_refusal_names_its_variable() {
    // SAFETY: the only test of this binary; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("OPENEXPERT_TEST_JUDGE_KEY", " sk-test-123 ") };
    let server = FaultServer::start(vec![
        Canned::ok("hi"),
        Canned::status(403, r#"{"error":{"message":"key revoked","type":"auth"}}"#),
    ]);
    let endpoint = Endpoint {
        api_key_env: Some("OPENEXPERT_TEST_JUDGE_KEY".into()),
        max_retries: 3,
        backoff_base_ms: 1,
        ..Endpoint::new(&server.base_url, "m")
    };
    let client = ChatClient::new("judge", endpoint).unwrap();
    assert!(
        !format!("{client:?}").contains("sk-test"),
        "Debug must not show the key"
    );
    let messages = [ChatMessage::user("q")];
    assert_eq!(
        client.chat(&messages, &Sampling::default()).unwrap().text,
        "hi"
    );
    assert!(
        server.requests()[0].contains("authorization: Bearer sk-test-123\r\n"),
        "{}",
        server.requests()[0]
    );
    let e = client.chat(&messages, &Sampling::default()).unwrap_err();
    assert!(
        matches!(e, ClientError::Unauthorized { status: 403, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("OPENEXPERT_TEST_JUDGE_KEY")
            && msg.contains("key revoked")
            && !msg.contains("sk-test"),
        "{msg}"
    );
    assert_eq!(server.hits(), 2, "403 is not retried");
}
