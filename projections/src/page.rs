//! Keyset pagination shared by the read models (Relay cursors).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The largest page any list returns.
pub const MAX_PAGE_SIZE: usize = 100;
/// The page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// A position in a list sorted by (time, position), newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub at_micros: i64,
    pub position: i64,
}

/// A cursor that did not come from this API.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("the cursor is not valid for this list")]
pub struct BadCursor;

impl Cursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("k1:{}:{}", self.at_micros, self.position))
    }

    /// Parses an opaque cursor.
    pub fn decode(raw: &str) -> Result<Cursor, BadCursor> {
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.as_bytes())
            .map_err(|_| BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        let mut parts = text.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("k1"), Some(at), Some(pos), None) => Ok(Cursor {
                at_micros: at.parse().map_err(|_| BadCursor)?,
                position: pos.parse().map_err(|_| BadCursor)?,
            }),
            _ => Err(BadCursor),
        }
    }
}

/// Which slice of a newest-first list to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRequest {
    /// `first` items older than `after` (or from the newest).
    Forward { first: usize, after: Option<Cursor> },
    /// `last` items newer than `before` (or up to the oldest).
    Backward { last: usize, before: Option<Cursor> },
}

/// A page of items, newest first, with whether more exist either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<(Cursor, T)>,
    pub has_previous: bool,
    pub has_next: bool,
}

impl PageRequest {
    /// Page size, starting cursor, and whether the page walks to older items.
    pub fn parts(self) -> (usize, Option<Cursor>, bool) {
        match self {
            PageRequest::Forward { first, after } => (first, after, true),
            PageRequest::Backward { last, before } => (last, before, false),
        }
    }
}

/// Appends the keyset condition and order of a newest-first list sorted by
/// (`time_column`, `position`) to a query that already has a `WHERE`.
pub fn push_keyset<'a, DB: sqlx::Database>(
    q: &mut sqlx::QueryBuilder<'a, DB>,
    time_column: &str,
    page: PageRequest,
) where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let (limit, cursor, forward) = page.parts();
    if let Some(c) = cursor {
        // Newest first: "after" walks to older entries, "before" to newer ones.
        let (cmp, tie) = if forward { ("<", "<") } else { (">", ">") };
        q.push(format!(" AND ({time_column} {cmp} "))
            .push_bind(c.at_micros)
            .push(format!(" OR ({time_column} = "))
            .push_bind(c.at_micros)
            .push(format!(" AND position {tie} "))
            .push_bind(c.position)
            .push("))");
    }
    let direction = if forward { "DESC" } else { "ASC" };
    q.push(format!(
        " ORDER BY {time_column} {direction}, position {direction} LIMIT "
    ))
    .push_bind(limit as i64 + 1);
}

impl<T> Page<T> {
    /// The page of up to `limit + 1` rows fetched by a [`push_keyset`] query.
    pub fn from_keyset_rows(mut items: Vec<(Cursor, T)>, page: PageRequest) -> Page<T> {
        let (limit, cursor, forward) = page.parts();
        let more = items.len() > limit;
        items.truncate(limit);
        if !forward {
            items.reverse();
        }
        Page {
            items,
            has_previous: if forward { cursor.is_some() } else { more },
            has_next: if forward { more } else { cursor.is_some() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            at_micros: 1_700_000_000_000_000,
            position: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        assert_eq!(Cursor::decode("not a cursor"), Err(BadCursor));
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode("k1:1")),
            Err(BadCursor)
        );
    }
}

/// A position in a list sorted by something other than time: the number of
/// items before it. Used by short per-account lists with several sort orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetCursor(pub usize);

impl OffsetCursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("o1:{}", self.0))
    }

    /// Parses an opaque cursor.
    pub fn decode(raw: &str) -> Result<OffsetCursor, BadCursor> {
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.as_bytes())
            .map_err(|_| BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        text.strip_prefix("o1:")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n <= 1_000_000)
            .map(OffsetCursor)
            .ok_or(BadCursor)
    }
}

/// A forward page of a list with offset cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetPage<T> {
    /// Items with the cursor of each (its offset + 1).
    pub items: Vec<(OffsetCursor, T)>,
    pub has_previous: bool,
    pub has_next: bool,
}

impl<T> OffsetPage<T> {
    /// Builds a page from up to `first + 1` rows fetched at `offset`.
    pub fn from_rows(mut rows: Vec<T>, offset: usize, first: usize) -> Self {
        let has_next = rows.len() > first;
        rows.truncate(first);
        OffsetPage {
            items: rows
                .into_iter()
                .enumerate()
                .map(|(i, row)| (OffsetCursor(offset + i + 1), row))
                .collect(),
            has_previous: offset > 0,
            has_next,
        }
    }
}
