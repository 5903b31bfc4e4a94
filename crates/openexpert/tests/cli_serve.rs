//! `openexpert serve` over real loopback HTTP: the API on a tiny random model in-process
//! (errors, streaming, batching, seeds, shutdown), then the binary on the default model, called
//! with llm-client's `ChatClient` and compared with `openexpert generate`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use llm_client::wire::{ChatCompletionChunk, ChatMessage};
use llm_client::{ChatClient, Endpoint, Sampling};
use lm_core::chat_template::ChatTemplate;
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::testing::{test_device, tiny_language_model};
use openexpert::serve::{ServeConfig, Server};
use serde_json::{Value, json};

/// A chat template for the tiny model (it has none of its own).
const TEMPLATE: &str = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

fn tiny_model() -> LanguageModel {
    let mut model = tiny_language_model(7, &test_device());
    model.chat_template = Some(ChatTemplate::new(TEMPLATE, "", "").unwrap());
    model
}

fn tiny_server(config: ServeConfig) -> Server {
    Server::start(
        tiny_model(),
        ExpertMix::Base,
        ServeConfig {
            model_name: "tiny".into(),
            port: 0,
            ..config
        },
    )
    .unwrap()
}

/// What the tiny model generates for one user message, called directly.
fn direct(model: &LanguageModel, user: &str, config: &GenerationConfig) -> String {
    let text = model
        .render_chat(&[lm_core::chat_template::ChatMessage::user(user)], true)
        .unwrap();
    let prompt = model.encode(&text).unwrap();
    generate(model, &[prompt], config, &ExpertMix::Base).unwrap()[0]
        .text
        .clone()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// POSTs JSON; returns the status and the body text.
fn post(url: &str, body: &Value) -> (u16, String) {
    let mut r = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn chat_body(user: &str, extra: Value) -> Value {
    let mut body = json!({"model": "tiny", "messages": [{"role": "user", "content": user}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// The text of a non-streamed answer.
fn answer_text(server: &Server, user: &str, extra: Value) -> String {
    let (status, body) = post(
        &format!("{}/chat/completions", server.base_url()),
        &chat_body(user, extra),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn models_health_and_errors_are_openai_shaped() {
    let server = tiny_server(ServeConfig::default());
    let base = server.base_url();
    let (status, body) = get(&format!("{base}/models"));
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["object"].as_str(), v["data"][0]["id"].as_str()),
        (Some("list"), Some("tiny"))
    );
    assert_eq!(get(&base.replace("/v1", "/health")), (200, "ok".into()));

    let url = format!("{base}/chat/completions");
    let error = |(status, body): (u16, String)| -> (u16, Value) {
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, v["error"].clone())
    };
    let (status, e) = error(post(
        &url,
        &json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}),
    ));
    assert_eq!((status, e["code"].as_str()), (404, Some("model_not_found")));
    assert!(e["message"].as_str().unwrap().contains("\"tiny\""), "{e}");
    for (extra, field) in [
        (json!({"temperature": -0.5}), "temperature"),
        (json!({"top_p": 1.5}), "top_p"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"max_tokens": 1_000_000}), "max_tokens"),
        (json!({"n": 3}), "n"),
    ] {
        let (status, e) = error(post(&url, &chat_body("x", extra.clone())));
        assert_eq!(
            (status, e["param"].as_str()),
            (400, Some(field)),
            "{extra}: {e}"
        );
        assert_eq!(e["type"], "invalid_request_error");
    }
    let (status, e) = error(post(&url, &json!({"model": "tiny"})));
    assert_eq!(status, 400);
    assert!(e["message"].as_str().unwrap().contains("messages"), "{e}");
    let (status, e) = error(post(&url, &json!({"model": "tiny", "messages": []})));
    assert_eq!((status, e["param"].as_str()), (400, Some("messages")));
    let (status, e) = error(get(&format!("{base}/completions")));
    assert_eq!(status, 404);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("/v1/chat/completions"),
        "{e}"
    );
    // A served path asked with the wrong method gets an OpenAI error body too, not an empty 405.
    let (status, e) = error(get(&url));
    assert_eq!(
        (status, e["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("POST /v1/chat/completions"),
        "{e}"
    );
    assert!(server.stats().rejected >= 8);
}

#[test]
fn greedy_answers_equal_direct_generation() {
    let server = tiny_server(ServeConfig::default());
    let model = tiny_model();
    for (user, max_tokens) in [("hello", 12), ("what is 2+2?", 20)] {
        let want = direct(
            &model,
            user,
            &GenerationConfig {
                max_new_tokens: max_tokens,
                ..Default::default()
            },
        );
        let got = answer_text(
            &server,
            user,
            json!({"temperature": 0, "max_tokens": max_tokens}),
        );
        assert_eq!(got, want, "{user}");
    }
    // a stop string cuts the answer as generate does
    let full = answer_text(
        &server,
        "hello",
        json!({"temperature": 0, "max_tokens": 12}),
    );
    if let Some(c) = full.chars().nth(3) {
        let cut = answer_text(
            &server,
            "hello",
            json!({"temperature": 0, "max_tokens": 12, "stop": c.to_string()}),
        );
        assert_eq!(cut, full[..full.find(c).unwrap()]);
    }
}

#[test]
fn streamed_deltas_join_to_the_plain_answer() {
    let server = tiny_server(ServeConfig::default());
    let url = format!("{}/chat/completions", server.base_url());
    let extra = json!({"temperature": 0, "max_tokens": 16});
    let plain = answer_text(&server, "stream me", extra.clone());
    let mut r = agent()
        .post(&url)
        .header("Content-Type", "application/json")
        .send(
            chat_body(
                "stream me",
                json!({"temperature": 0, "max_tokens": 16, "stream": true}),
            )
            .to_string(),
        )
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let body = r.body_mut().read_to_string().unwrap();
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data line: {e:?}"))
        })
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<ChatCompletionChunk> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.len() >= 2);
    assert!(
        chunks
            .iter()
            .all(|c| c.object == "chat.completion.chunk" && c.id == chunks[0].id)
    );
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    let last = &chunks[chunks.len() - 1].choices[0];
    assert!(matches!(
        last.finish_reason.as_deref(),
        Some("stop" | "length")
    ));
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c.choices[0].finish_reason.is_none())
    );
    let joined: String = chunks
        .iter()
        .filter_map(|c| c.choices[0].delta.content.clone())
        .collect();
    assert_eq!(joined, plain);
}

#[test]
fn concurrent_requests_are_batched_and_answer_as_sequential_ones() {
    // a long window so the four requests surely meet in one batch
    let server = tiny_server(ServeConfig {
        batch_window_ms: 400,
        ..ServeConfig::default()
    });
    let prompts = ["one", "a longer second prompt", "3", "four four"];
    let extra = json!({"temperature": 0, "max_tokens": 10});
    let sequential: Vec<String> = prompts
        .iter()
        .map(|p| answer_text(&server, p, extra.clone()))
        .collect();
    assert_eq!(server.stats().largest_batch, 1);
    let concurrent: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let (server, extra) = (&server, extra.clone());
                s.spawn(move || answer_text(server, p, extra))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(concurrent, sequential);
    let stats = server.stats();
    assert!(stats.largest_batch >= 2, "{stats:?}");
    assert_eq!(stats.requests, 8);
}

#[test]
fn a_seeded_sample_is_the_same_alone_or_batched() {
    let server = tiny_server(ServeConfig {
        batch_window_ms: 400,
        ..ServeConfig::default()
    });
    let model = tiny_model();
    let sampled =
        |seed: u64| json!({"temperature": 0.9, "top_p": 0.95, "max_tokens": 12, "seed": seed});
    let want = direct(
        &model,
        "roll",
        &GenerationConfig {
            max_new_tokens: 12,
            temperature: 0.9,
            top_p: 0.95,
            seed: 5,
            ..Default::default()
        },
    );
    assert_eq!(answer_text(&server, "roll", sampled(5)), want);
    // batched with other seeded requests (same seed 5 twice, and 6, 11)
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = [5u64, 6, 5, 11]
            .into_iter()
            .map(|seed| {
                let server = &server;
                s.spawn(move || answer_text(server, "roll", sampled(seed)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        (together[0].as_str(), together[2].as_str()),
        (want.as_str(), want.as_str())
    );
    assert_eq!(together[1], answer_text(&server, "roll", sampled(6)));
    assert_eq!(together[3], answer_text(&server, "roll", sampled(11)));
}

#[test]
fn shutdown_answers_then_stops_listening() {
    let server = tiny_server(ServeConfig::default());
    let base = server.base_url();
    let client = ChatClient::new(
        "judge",
        Endpoint {
            max_retries: 0,
            ..Endpoint::new(&base, "tiny")
        },
    )
    .unwrap();
    client.check_model().unwrap();
    // the client speaks to the server (the tiny model's bytes may decode to anything, so only
    // the call's success or a clean empty-answer error is asserted)
    match client.chat(&[ChatMessage::user("hi")], &Sampling::greedy(8)) {
        Ok(c) => assert!(matches!(c.finish_reason.as_str(), "stop" | "length")),
        Err(e) => assert!(
            matches!(e, llm_client::ClientError::EmptyResponse { .. }),
            "{e}"
        ),
    }
    server.shutdown().unwrap();
    let e = client
        .chat(&[ChatMessage::user("hi again")], &Sampling::greedy(8))
        .unwrap_err();
    assert!(
        matches!(e, llm_client::ClientError::Unreachable { .. }),
        "{e:?}"
    );
}

#[test]
fn a_busy_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = Server::start(
        tiny_model(),
        ExpertMix::Base,
        ServeConfig {
            port,
            ..Default::default()
        },
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("--port"),
        "{msg}"
    );
}

#[test]
fn a_model_without_chat_template_is_refused() {
    let model = tiny_language_model(7, &test_device());
    let e = Server::start(
        model,
        ExpertMix::Base,
        ServeConfig {
            port: 0,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("no chat template"), "{e}");
    let e = Server::start(
        tiny_model(),
        ExpertMix::Base,
        ServeConfig {
            port: 0,
            max_batch: 0,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("--max-batch"), "{e}");
}

// ---- the binary on the default model ----

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openexpert"))
}

/// A `serve` process, killed (and reaped) when dropped so a failing test leaves no server behind.
struct ServeProcess(Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openexpert serve --port 0 ARGS`, and its base URL read from stderr.
fn spawn_server(args: &[&str]) -> (ServeProcess, String) {
    let mut child = bin()
        .args(["serve", "--port", "0"])
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = ServeProcess(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(300)) {
        seen.push_str(&line);
        seen.push('\n');
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            // keep draining stderr so the server never blocks on a full pipe
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, url.to_string());
        }
    }
    drop(child);
    panic!("serve printed no address:\n{seen}");
}

fn generate_cli(prompts: &[&str], max_new_tokens: usize) -> Vec<String> {
    let mut cmd = bin();
    cmd.args([
        "generate",
        "--json",
        "--max-new-tokens",
        &max_new_tokens.to_string(),
    ]);
    for p in prompts {
        cmd.args(["--prompt", p]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn served_greedy_answers_equal_generate_and_ctrl_c_stops_it() {
    lm_core::testing::default_model_path(); // a clear message when it is not fetched
    let (mut server, base_url) = spawn_server(&[]);
    let prompts = [
        "What is the capital of France?",
        "Write one sentence about the sea.",
        "List three prime numbers.",
        "How do I boil an egg?",
    ];
    let max_tokens = 24;
    let want = generate_cli(&prompts, max_tokens);
    assert_eq!(want[0], "The capital of France is Paris.");

    let client = ChatClient::new(
        "teacher",
        Endpoint {
            max_concurrency: 4,
            timeout_s: 300.0,
            ..Endpoint::new(&base_url, lm_core::assets::DEFAULT_MODEL)
        },
    )
    .unwrap();
    let sampling = Sampling::greedy(max_tokens);
    let sequential: Vec<String> = prompts
        .iter()
        .map(|p| {
            client
                .chat(&[ChatMessage::user(*p)], &sampling)
                .unwrap()
                .text
        })
        .collect();
    assert_eq!(sequential, want);
    // four at once: batched by the server, the same answers in the same order
    let requests: Vec<_> = prompts
        .iter()
        .map(|p| (vec![ChatMessage::user(*p)], sampling.clone()))
        .collect();
    let concurrent: Vec<String> = client
        .chat_many(&requests)
        .into_iter()
        .map(|r| r.unwrap().text)
        .collect();
    assert_eq!(concurrent, want);
    assert_eq!(client.stats().failed, 0);

    // Ctrl-C: a graceful stop with a success status
    #[cfg(unix)]
    {
        let status = Command::new("kill")
            .args(["-INT", &server.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = server.0.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
    #[cfg(not(unix))]
    drop(server);
}

#[test]
fn serve_refuses_a_bad_port_and_an_unknown_model() {
    let out = bin()
        .args(["serve", "--port", "notaport"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = bin()
        .args(["serve", "--model", "no-such-model", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-model"), "{err}");
}
