//! What every list endpoint shares: `limit` and the cursors, the `created` filter, and paging.

use serde_json::Value;

use crate::api::form::Params;
use crate::model::{kind_of, ApiError};
use crate::store::Store;

/// One page of objects, newest first, with `starting_after` / `ending_before` cursors, and whether more follow.
pub fn paginate<'a>(items: impl Iterator<Item = &'a Value>, page: &ListParams) -> (Vec<&'a Value>, bool) {
    let items: Vec<&Value> = items.collect();
    let position = |cursor: &str| items.iter().position(|v| v["id"] == cursor);
    let (start, end) = if let Some(after) = &page.starting_after {
        let start = position(after).map(|i| i + 1).unwrap_or(items.len());
        (start, (start + page.limit).min(items.len()))
    } else if let Some(before) = &page.ending_before {
        let end = position(before).unwrap_or(0);
        (end.saturating_sub(page.limit), end)
    } else {
        (0, page.limit.min(items.len()))
    };
    let has_more = if page.ending_before.is_some() { start > 0 } else { end < items.len() };
    (items[start..end].to_vec(), has_more)
}

/// `limit`, `starting_after` and `ending_before`, shared by every list endpoint.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub limit: usize,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
}

pub const LIST_PARAMS: &[&str] = &["limit", "starting_after", "ending_before", "expand", "created"];

impl ListParams {
    pub fn from(params: &Params, store: &Store) -> Result<ListParams, ApiError> {
        let limit = match params.int("limit")? {
            None => 10,
            Some(n) if (1..=100).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    format!("Invalid limit: must be between 1 and 100 (got {n})"),
                    Some("limit"),
                    "parameter_invalid_integer",
                ))
            }
        };
        let cursor = |name: &str| -> Result<Option<String>, ApiError> {
            match params.non_empty_str(name)? {
                None => Ok(None),
                Some(id) if store.contains(id) => Ok(Some(id.to_string())),
                Some(id) => Err(ApiError::missing(kind_of(id).unwrap_or("object"), id, Some(name))),
            }
        };
        let starting_after = cursor("starting_after")?;
        let ending_before = cursor("ending_before")?;
        if starting_after.is_some() && ending_before.is_some() {
            return Err(ApiError::invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                Some("starting_after"),
                "parameters_exclusive",
            ));
        }
        Ok(ListParams { limit, starting_after, ending_before })
    }
}

/// The `created` filter of list endpoints: an exact timestamp or `created[gt|gte|lt|lte]`.
pub fn created_filter(params: &Params) -> Result<impl Fn(&Value) -> bool, ApiError> {
    let mut bounds: Vec<(String, i64)> = Vec::new();
    if params.has("created") {
        match params.int("created") {
            Ok(Some(t)) => bounds.push(("eq".into(), t)),
            _ => {
                let hash = params.hash("created")?.unwrap_or_default();
                hash.allow(&["gt", "gte", "lt", "lte"])?;
                for op in ["gt", "gte", "lt", "lte"] {
                    if let Some(t) = hash.int(op)? {
                        bounds.push((op.into(), t));
                    }
                }
            }
        }
    }
    Ok(move |v: &Value| {
        let created = v["created"].as_i64().unwrap_or(0);
        bounds.iter().all(|(op, t)| match op.as_str() {
            "eq" => created == *t,
            "gt" => created > *t,
            "gte" => created >= *t,
            "lt" => created < *t,
            _ => created <= *t,
        })
    })
}
