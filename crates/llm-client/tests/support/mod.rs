//! A loopback fault server: a std `TcpListener` on 127.0.0.1:0 answering canned HTTP responses
//! in sequence (the last one repeats), one connection per request, counting requests and the
//! most handled at once.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does with one request.
#[derive(Debug, Clone)]
pub struct Canned {
    /// HTTP status; 0 closes the connection without answering.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body; `{echo}` is replaced by the last message's content of the request.
    pub body: String,
    /// Wait before answering.
    pub delay: Duration,
}

impl Canned {
    /// A status with a body.
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// A 200 chat completion whose message is `text`.
    pub fn ok(text: &str) -> Self {
        Self::status(200, &completion_json(text))
    }

    /// A 200 chat completion repeating the request's last message.
    pub fn echo() -> Self {
        Self::ok("{echo}")
    }

    /// Closes the connection without a byte of answer.
    pub fn hang_up() -> Self {
        Self::status(0, "")
    }

    /// The same, with a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same, answered after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A chat.completion JSON with one choice.
pub fn completion_json(text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
    })
    .to_string()
}

/// A running fault server (it lives until the test process ends).
pub struct FaultServer {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    hits: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FaultServer {
    /// Starts a server answering `responses` in order (the last one repeats).
    pub fn start(responses: Vec<Canned>) -> Self {
        assert!(!responses.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let responses = Arc::new(responses);
        {
            let (hits, peak, requests) = (hits.clone(), peak.clone(), requests.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let (hits, peak, now, requests, responses) = (
                        hits.clone(),
                        peak.clone(),
                        now.clone(),
                        requests.clone(),
                        responses.clone(),
                    );
                    std::thread::spawn(move || {
                        let Some(request) = read_request(&stream) else {
                            return;
                        };
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        let i = hits.fetch_add(1, Ordering::SeqCst);
                        let canned = responses[i.min(responses.len() - 1)].clone();
                        requests.lock().unwrap().push(request.clone());
                        std::thread::sleep(canned.delay);
                        // Out of the count before answering: the client cannot send its next
                        // call until it has this answer, so every call counted here is one the
                        // client still has in flight (decrementing after the write raced with
                        // that next call and over-counted under load).
                        now.fetch_sub(1, Ordering::SeqCst);
                        if canned.status != 0 {
                            answer(stream, &canned, &request);
                        }
                    });
                }
            });
        }
        Self {
            base_url,
            hits,
            peak,
            requests,
        }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The most requests handled at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// The raw requests received (head and body).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request (head, then `Content-Length` bytes of body) as text.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// Writes a canned answer and closes.
fn answer(mut stream: TcpStream, canned: &Canned, request: &str) {
    let mut body = canned.body.clone();
    if body.contains("{echo}") {
        let json = request.split("\r\n\r\n").nth(1).unwrap_or("");
        let last = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| {
                v["messages"].as_array()?.last()?["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        body = body.replace("{echo}", &last);
    }
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        canned.status,
        body.len()
    );
    for (name, value) in &canned.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}

/// A base URL where nothing listens.
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}
