//! The bookshop as a user runs it: the real binary on a free loopback
//! port, real HTTP requests, and the number of database queries it sent
//! (`/stats`) after each step: cold, warm, after writes, and with two
//! processes sharing one Redis (started by `cacheme-test-support`) and one
//! SQLite file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cacheme_test_support::RedisServer;
use serde_json::{Value, json};

/// Generous: the machine is shared and loaded.
const PATIENCE: Duration = Duration::from_secs(120);

/// A running bookshop process, killed on drop.
struct Shop {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
}

impl Shop {
    fn start(cache_url: &str, db: &str) -> Shop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bookshop"))
            .env("BOOKSHOP_ADDR", "127.0.0.1:0")
            .env("CACHEME_URL", cache_url)
            .env("BOOKSHOP_DB", db)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the bookshop binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = Arc::clone(&output);
        // Reads every line (a full pipe would stall the server), handing
        // the listening address over once.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("bookshop: listening on http://") {
                    let addr = rest.split_whitespace().next().unwrap_or_default().to_owned();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(PATIENCE)
            .expect("the bookshop prints its address")
            .parse()
            .expect("a socket address");
        Shop { child, addr, output }
    }

    /// Sends one request; returns the status and the JSON body.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, body) = self.call_raw(method, path, body);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// The answer's status and body as text.
    fn call_raw(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(self.addr).expect("connect to the bookshop");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read the answer");
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let (_, body) = answer.split_once("\r\n\r\n").expect("a header block");
        (status, body.to_owned())
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The database queries this process has sent so far.
    fn queries(&self) -> u64 {
        self.get("/stats")["queries"].as_u64().expect("a query count")
    }

    /// The database queries `step` costs.
    fn cost(&self, step: impl FnOnce(&Shop)) -> u64 {
        let before = self.queries();
        step(self);
        self.queries() - before
    }

    fn printed(&self, line: &str) -> bool {
        self.output.lock().unwrap().iter().any(|printed| printed.contains(line))
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn titles(page: &Value) -> Vec<String> {
    page["books"]
        .as_array()
        .expect("books")
        .iter()
        .map(|book| book["title"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn memory_cache_saves_queries_and_writes_refresh_it() {
    let shop = Shop::start("memory://", ":memory:");

    // Cold: the pipeline fetches the author, the genres and the shelf
    // (three queries), then get_m fetches the page's five books in one.
    let cold = shop.cost(|shop| {
        let page = shop.get("/authors/1/scifi?page=1");
        assert_eq!(titles(&page)[0], "The Left Hand of Darkness");
        assert_eq!(page["books"].as_array().unwrap().len(), 5);
    });
    assert_eq!(cold, 4);
    assert!(shop.printed("[MISS] ShelfStore shelf:author:1:genre:scifi:page:1"));
    assert!(shop.printed("IN (?, ?, ?, ?, ?)"), "one IN query for the five books");

    // Warm: nothing reaches the database, books of the page included.
    assert_eq!(shop.cost(|shop| drop(shop.get("/authors/1/scifi?page=1"))), 0);
    assert_eq!(shop.cost(|shop| drop(shop.get("/books/2"))), 0);
    assert!(shop.printed("[HIT] BookStore book:2"));

    // What the cache saved, per store: `/stats` (Client::stats) and the
    // Prometheus page at `/metrics`.
    let stats = shop.get("/stats");
    assert!(stats["stores"]["BookStore"]["hits"].as_u64().unwrap() >= 6, "{stats}");
    assert!(
        stats["stores"]["ShelfStore"]["misses"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    let (status, page) = shop.call_raw("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        page.lines()
            .any(|line| line.starts_with("cacheme_hits") && line.contains("store=\"BookStore\"")),
        "{page}"
    );
    assert_eq!(shop.cost(|shop| drop(shop.get("/books/1"))), 1);

    // A rename: the UPDATE and `update`'s refetch; then every read is warm
    // and new.
    let renamed = "The Left Hand of Darkness (50th anniversary)";
    let cost = shop.cost(|shop| {
        let (status, book) = shop.call("PUT", "/books/2", Some(json!({ "title": renamed })));
        assert_eq!((status, book["title"].as_str()), (200, Some(renamed)));
    });
    assert_eq!(cost, 2);
    let cost = shop.cost(|shop| {
        assert_eq!(shop.get("/books/2")["title"], renamed);
        assert_eq!(titles(&shop.get("/authors/1/scifi?page=1"))[0], renamed);
    });
    assert_eq!(cost, 0);

    // A new book: the INSERT and the genre counts refetched; the shelf
    // pages of its genre were invalidated, the books were not.
    let cost = shop.cost(|shop| {
        let new = json!({ "title": "The Telling", "genre": "scifi", "year": 2000 });
        assert_eq!(shop.call("POST", "/authors/1/books", Some(new)).0, 201);
    });
    assert_eq!(cost, 2);
    let cost = shop.cost(|shop| {
        let page = shop.get("/authors/1/scifi?page=2");
        assert_eq!(titles(&page), ["The Telling"]);
        assert_eq!(page["genres"], json!([["essays", 1], ["fantasy", 7], ["scifi", 6]]));
    });
    assert_eq!(cost, 1, "the new page's shelf (the new book was `set` when added)");

    // Errors are answers, not cached values.
    assert_eq!(shop.call("GET", "/books/999", None).0, 404);
    // Many books: one missing id does not fail the others.
    let cost = shop.cost(|shop| {
        let many = shop.get("/books?ids=1,999,2");
        assert_eq!(many["missing"], json!([999]));
        assert_eq!(many["books"].as_array().unwrap().len(), 2);
    });
    assert_eq!(
        cost, 2,
        "books 1 and 2 are cached; 999 is asked for (one IN query, then alone)"
    );
    assert_eq!(shop.call("PUT", "/books/999", Some(json!({ "title": "x" }))).0, 404);
}

#[test]
fn two_processes_share_one_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bookshop.db");
    let db = db.to_str().unwrap();
    let a = Shop::start(&redis.url(), db);
    let b = Shop::start(&redis.url(), db);

    assert_eq!(a.cost(|a| drop(a.get("/authors/3/fiction?page=1"))), 4);
    // The other process finds everything in Redis.
    assert_eq!(b.cost(|b| drop(b.get("/authors/3/fiction?page=1"))), 0);
    assert!(b.printed("[HIT] AuthorStore author:3"));

    // A rename in B is seen by A without a query: `update` wrote Redis.
    let renamed = "Il sentiero dei nidi di ragno";
    assert_eq!(
        b.cost(|b| drop(b.call("PUT", "/books/23", Some(json!({ "title": renamed }))))),
        2
    );
    let cost = a.cost(|a| {
        assert_eq!(a.get("/books/23")["title"], renamed);
        assert_eq!(titles(&a.get("/authors/3/fiction?page=1"))[0], renamed);
    });
    assert_eq!(cost, 0);

    // A book added through A: B's next look at the genre's pages refetches
    // the invalidated shelf (one query) and only the new book (one more).
    let new = json!({ "title": "Under the Jaguar Sun", "genre": "fiction", "year": 1986 });
    assert_eq!(a.call("POST", "/authors/3/books", Some(new)).0, 201);
    let cost = b.cost(|b| {
        let page = b.get("/authors/3/fiction?page=2");
        assert_eq!(titles(&page).last().map(String::as_str), Some("Under the Jaguar Sun"));
    });
    assert_eq!(cost, 2);
}
