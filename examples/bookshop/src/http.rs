//! The HTTP API: handlers read through the stores and write through the
//! database, then `update` or `invalidate` the cached values they changed.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cacheme::{Pipeline, PromiseError, UpdateError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::DbError;
use crate::stores::{App, Author, AuthorStore, Book, BookStore, GenresStore, PAGE_SIZE, ShelfStore};

/// Every route of the bookshop.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/books", get(books))
        .route("/books/{id}", get(book).put(rename_book))
        .route("/authors/{id}/books", post(add_book))
        .route("/authors/{id}/{genre}", get(author_page))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn index() -> &'static str {
    "cacheme bookshop\n\
     GET  /books/{id}                   one book (BookStore)\n\
     GET  /books?ids=1,2,999            many books with BookStore::get_m; ids not found are listed apart\n\
     GET  /authors/{id}/{genre}?page=N  an author page: one pipeline over AuthorStore, GenresStore\n\
     \x20                                  and ShelfStore, then the page's books with BookStore::get_m\n\
     PUT  /books/{id}                   {\"title\": ..}: rename, then BookStore::update\n\
     POST /authors/{id}/books           {\"title\": .., \"genre\": .., \"year\": ..}: add, BookStore::set, invalidate\n\
     GET  /stats                        database queries sent by this process, and the cache's counters per store\n\
     GET  /metrics                      the cache's metrics for Prometheus (hits, misses, fetches, latencies)\n"
}

async fn book(State(app): State<Arc<App>>, Path(id): Path<u64>) -> Result<Json<Book>, ApiError> {
    Ok(Json(BookStore::get(&app, id).await?))
}

#[derive(Deserialize)]
struct IdsQuery {
    ids: String,
}

#[derive(Serialize)]
struct ManyBooks {
    books: Vec<Book>,
    missing: Vec<u64>,
}

/// Many books in one `get_m` (misses: one `IN (...)` query). Each id has
/// its own outcome: ids not found are listed in `missing`, the others
/// served; any other error fails the request.
async fn books(State(app): State<Arc<App>>, Query(query): Query<IdsQuery>) -> Result<Json<ManyBooks>, ApiError> {
    let mut ids = Vec::new();
    for id in query.ids.split(',').filter(|id| !id.trim().is_empty()) {
        let id = id.trim().parse::<u64>();
        ids.push(id.map_err(|_| ApiError(StatusCode::BAD_REQUEST, "ids are numbers: ?ids=1,2,3".to_owned()))?);
    }
    let mut many = BookStore::get_m(&app);
    many.extend(ids.iter().copied());
    let found = many.run().await;
    let mut answer = ManyBooks {
        books: Vec::new(),
        missing: Vec::new(),
    };
    for (id, outcome) in ids.into_iter().zip(found.iter()) {
        match outcome {
            Ok(book) => answer.books.push(book.clone()),
            Err(DbError::NotFound(_)) => answer.missing.push(id),
            Err(error) => return Err(error.clone().into()),
        }
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<u32>,
}

#[derive(Serialize)]
struct AuthorPage {
    author: Author,
    genres: Vec<(String, u32)>,
    genre: String,
    page: u32,
    more: bool,
    books: Vec<Book>,
}

/// One pipeline reads the author, their genres and the page's book ids
/// (one round trip on Redis; misses fetched together), then `get_m` reads
/// the books (misses: one `IN (...)` query).
async fn author_page(
    State(app): State<Arc<App>>,
    Path((id, genre)): Path<(u64, String)>,
    Query(query): Query<PageQuery>,
) -> Result<Json<AuthorPage>, ApiError> {
    let page = query.page.unwrap_or(1).max(1);
    let mut pipeline = Pipeline::new();
    let author = AuthorStore::get_p(&app, &mut pipeline, id);
    let genres = GenresStore::get_p(&app, &mut pipeline, id);
    let shelf = ShelfStore::get_p(&app, &mut pipeline, id, genre.clone(), page);
    pipeline.execute().await.map_err(ApiError::cache)?;
    let (author, genres, shelf) = (author.into_result()?, genres.into_result()?, shelf.into_result()?);

    let mut books = Vec::new();
    if !shelf.ids.is_empty() {
        let mut many = BookStore::get_m(&app);
        for &book in &shelf.ids {
            many.push(book);
        }
        books = many.run().await.into_all()?.iter().cloned().collect();
    }
    Ok(Json(AuthorPage {
        author,
        genres,
        genre,
        page,
        more: shelf.more,
        books,
    }))
}

#[derive(Deserialize)]
struct Rename {
    title: String,
}

/// Renames a book, then `update` refetches it and stores the new value:
/// every process sharing the cache serves the new title at once.
async fn rename_book(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
    Json(rename): Json<Rename>,
) -> Result<Json<Book>, ApiError> {
    let sql = "UPDATE books SET title = ?1 WHERE id = ?2";
    let title = rename.title;
    let changed = app
        .db
        .run(format!("{sql}  [{title:?}, {id}]"), move |conn| {
            Ok(conn.execute(sql, rusqlite::params![title, id])?)
        })
        .await?;
    if changed == 0 {
        return Err(DbError::NotFound(format!("book {id}")).into());
    }
    let book = BookStore::update(&app, id).await.map_err(|error| match error {
        UpdateError::Fetch(error) => ApiError::from(error),
        UpdateError::Cache(error) => ApiError::cache(error),
    })?;
    Ok(Json(book))
}

#[derive(Deserialize)]
struct NewBook {
    title: String,
    genre: String,
    year: u16,
}

/// Adds a book, `set`s it in the cache (its row is known: no query), then
/// invalidates what it changes: the author's genre counts and the pages of
/// that genre (the count, refetched at once, tells how many pages there
/// are).
async fn add_book(
    State(app): State<Arc<App>>,
    Path(author_id): Path<u64>,
    Json(new): Json<NewBook>,
) -> Result<(StatusCode, Json<Book>), ApiError> {
    let sql = "INSERT INTO books (author_id, title, genre, year) VALUES (?1, ?2, ?3, ?4)";
    let book = Book {
        id: 0,
        author_id,
        title: new.title,
        genre: new.genre,
        year: new.year,
    };
    let row = book.clone();
    let id = app
        .db
        .run(
            format!("{sql}  [{author_id}, {:?}, {:?}, {}]", row.title, row.genre, row.year),
            move |conn| {
                conn.execute(sql, rusqlite::params![row.author_id, row.title, row.genre, row.year])?;
                Ok(conn.last_insert_rowid() as u64)
            },
        )
        .await?;
    let book = Book { id, ..book };
    BookStore::set(&app, id, &book).await.map_err(ApiError::cache)?;
    GenresStore::invalidate(&app, author_id)
        .await
        .map_err(ApiError::cache)?;
    let genres = GenresStore::get(&app, author_id).await?;
    let count = genres
        .iter()
        .find(|(genre, _)| *genre == book.genre)
        .map_or(0, |(_, count)| *count);
    for page in 1..=count.div_ceil(PAGE_SIZE) {
        ShelfStore::invalidate(&app, author_id, book.genre.clone(), page)
            .await
            .map_err(ApiError::cache)?;
    }
    Ok((StatusCode::CREATED, Json(book)))
}

/// What the cache saved: the database queries this process has sent.
async fn stats(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let stores: serde_json::Map<String, serde_json::Value> = app
        .cache
        .stats()
        .iter()
        .map(|(store, counts)| {
            let counts = json!({
                "hits": counts.hits + counts.local_hits,
                "misses": counts.misses,
                "fetches": counts.fetches,
                "hit_ratio": counts.hit_ratio(),
            });
            (store.to_string(), counts)
        })
        .collect();
    Json(json!({
        "queries": app.db.queries(),
        "cache": app.cache.cache().backend().provider(),
        "stores": stores,
    }))
}

/// The Prometheus page of the cache's metrics (see cacheme's
/// docs/observability.md for the names).
async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// An error answer: 404 for a missing row, 500 otherwise, as JSON.
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn cache(error: cacheme::Error) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("cache: {error}"))
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> ApiError {
        let status = match error {
            DbError::NotFound(_) => StatusCode::NOT_FOUND,
            DbError::Sql(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, error.to_string())
    }
}

impl From<PromiseError<DbError>> for ApiError {
    fn from(error: PromiseError<DbError>) -> ApiError {
        match error {
            PromiseError::Fetch(error) => error.into(),
            other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}
