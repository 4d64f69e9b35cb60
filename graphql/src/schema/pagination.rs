//! Page-size checks shared by every connection field.

use async_graphql::connection::PageInfo;
use kabinet_projections::page::{Cursor, Page, PageRequest, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

use super::context::bad_input;

/// Turns Relay arguments into a page request, refusing bad sizes and cursors.
pub fn page_request(
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
) -> async_graphql::Result<PageRequest> {
    let size = |name: &str, n: i32| -> async_graphql::Result<usize> {
        if n < 0 || n as usize > MAX_PAGE_SIZE {
            return Err(bad_input(format!(
                "{name} must be between 0 and {MAX_PAGE_SIZE}, got {n}"
            )));
        }
        Ok(n as usize)
    };
    let cursor = |name: &str, raw: Option<String>| -> async_graphql::Result<Option<Cursor>> {
        raw.map(|c| Cursor::decode(&c).map_err(|e| bad_input(format!("{name}: {e}"))))
            .transpose()
    };
    match (first, last) {
        (Some(_), Some(_)) => Err(bad_input("give either first or last, not both")),
        (None, Some(last)) => {
            if after.is_some() {
                return Err(bad_input(
                    "last pages backwards: use it with before, not after",
                ));
            }
            Ok(PageRequest::Backward {
                last: size("last", last)?,
                before: cursor("before", before)?,
            })
        }
        (first, None) => {
            if before.is_some() {
                return Err(bad_input(
                    "before pages backwards: use it with last, not first",
                ));
            }
            Ok(PageRequest::Forward {
                first: first
                    .map(|n| size("first", n))
                    .transpose()?
                    .unwrap_or(DEFAULT_PAGE_SIZE),
                after: cursor("after", after)?,
            })
        }
    }
}

/// Relay page info of a page.
pub fn page_info<T>(page: &Page<T>) -> PageInfo {
    PageInfo {
        has_previous_page: page.has_previous,
        has_next_page: page.has_next,
        start_cursor: page.items.first().map(|(c, _)| c.encode()),
        end_cursor: page.items.last().map(|(c, _)| c.encode()),
    }
}

/// Complexity of a connection: its child complexity times the page size asked for.
pub fn connection_complexity(child: usize, first: Option<i32>, last: Option<i32>) -> usize {
    let size = first
        .or(last)
        .unwrap_or(DEFAULT_PAGE_SIZE as i32)
        .clamp(0, MAX_PAGE_SIZE as i32) as usize;
    child.saturating_mul(size.max(1)).saturating_add(2)
}

/// Page size and offset of a forward-only list with offset cursors.
pub fn forward_page(
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<(usize, usize)> {
    let first = match first {
        None => DEFAULT_PAGE_SIZE,
        Some(n) if n < 0 || n as usize > MAX_PAGE_SIZE => {
            return Err(bad_input(format!(
                "first must be between 0 and {MAX_PAGE_SIZE}, got {n}"
            )))
        }
        Some(n) => n as usize,
    };
    let offset = match after {
        None => 0,
        Some(c) => {
            kabinet_projections::page::OffsetCursor::decode(&c)
                .map_err(|e| bad_input(format!("after: {e}")))?
                .0
        }
    };
    Ok((first, offset))
}
