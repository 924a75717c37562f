//! Stripe's search query language (`GET /v1/customers/search?query=…`), over the stored objects.
//!
//! Clauses are `field:value` (exact, case-insensitive), `field~"abc"` (substring, 3 characters or
//! more, text fields), `field>n` / `<` / `>=` / `<=` (numbers), `metadata['key']:'value'`,
//! `field:null` (absent), each optionally negated with `-`, joined by spaces or `AND`, or by `OR`
//! (never both). Hand-written: no crate implements this language, and it is small.

use serde_json::Value;

use crate::api::expand::{ExpandTree, ListPage};
use crate::api::request::{ApiRequest, JsonBody};
use crate::api::ApiResult;
use crate::engine::Emulator;
use crate::model::ApiError;

/// How a field may be searched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field {
    /// Exact match only.
    Token,
    /// Exact match of words in order, and `~` substrings.
    Text,
    /// Exact match and comparisons.
    Numeric,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Equals,
    Contains,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

#[derive(Debug, PartialEq)]
enum Operand {
    Text(String),
    Number(f64),
    Null,
}

#[derive(Debug, PartialEq)]
struct Clause {
    negated: bool,
    field: String,
    /// The key of `metadata['key']`.
    key: Option<String>,
    kind: Field,
    op: Op,
    value: Operand,
}

#[derive(Debug, PartialEq)]
struct Query {
    clauses: Vec<Clause>,
    any: bool,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid(message, Some("query"), "parameter_invalid_string")
}

/// Parse a query, checking each field and operator against the resource's `fields`.
fn parse(query: &str, fields: &[(&str, Field)]) -> Result<Query, ApiError> {
    let mut rest = query.trim();
    if rest.is_empty() {
        return Err(invalid("The search query is empty."));
    }
    let (mut clauses, mut joiners) = (Vec::new(), Vec::new());
    loop {
        let (clause, after) = parse_clause(rest, fields)?;
        clauses.push(clause);
        rest = after.trim_start();
        if rest.is_empty() {
            break;
        }
        let keyword: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        let upper = keyword.to_ascii_uppercase();
        if (upper == "AND" || upper == "OR") && rest[keyword.len()..].starts_with(char::is_whitespace) {
            joiners.push(upper == "OR");
            rest = rest[keyword.len()..].trim_start();
        } else {
            joiners.push(false); // a space means AND
        }
    }
    if joiners.contains(&true) && joiners.contains(&false) {
        return Err(invalid("A search query cannot mix AND and OR."));
    }
    Ok(Query { clauses, any: joiners.contains(&true) })
}

fn parse_clause<'q>(text: &'q str, fields: &[(&str, Field)]) -> Result<(Clause, &'q str), ApiError> {
    let (negated, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let name_len = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(text.len());
    let field = &text[..name_len];
    let mut rest = &text[name_len..];
    if field.is_empty() {
        return Err(invalid(format!("Expected a field name at `{text}`.")));
    }
    let kind = fields
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, kind)| *kind)
        .ok_or_else(|| invalid(format!("Field `{field}` is an unsupported search field for this resource.")))?;
    let mut key = None;
    if field == "metadata" {
        let inner = rest.strip_prefix('[').ok_or_else(|| invalid("Search metadata as metadata['key']."))?;
        let (k, after) = quoted(inner)?;
        rest = after.strip_prefix(']').ok_or_else(|| invalid("Search metadata as metadata['key']."))?;
        key = Some(k);
    }
    let (op, after) =
        [(">=", Op::GreaterOrEqual), ("<=", Op::LessOrEqual), (":", Op::Equals), ("~", Op::Contains), (">", Op::Greater), ("<", Op::Less)]
            .iter()
            .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|after| (*op, after)))
            .ok_or_else(|| invalid(format!("Expected an operator after `{field}`.")))?;
    let (value, rest) = if after.starts_with(['\'', '"']) {
        let (v, rest) = quoted(after)?;
        (Operand::Text(v), rest)
    } else {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let word = &after[..end];
        let value = match word {
            "null" => Operand::Null,
            _ => Operand::Number(word.parse().map_err(|_| invalid(format!("`{word}`: text values must be quoted.")))?),
        };
        (value, &after[end..])
    };
    let fits = match op {
        Op::Equals => true,
        Op::Contains => kind == Field::Text && matches!(&value, Operand::Text(t) if t.chars().count() >= 3),
        _ => kind == Field::Numeric && matches!(value, Operand::Number(_)),
    };
    if !fits {
        return Err(invalid(format!(
            "The operator does not apply to `{field}` with that value (`~` needs text of 3 characters or more; comparisons need numbers)."
        )));
    }
    Ok((Clause { negated, field: field.to_string(), key, kind, op, value }, rest))
}

/// A value in single or double quotes, `\` escaping the quote; the text after it.
fn quoted(text: &str) -> Result<(String, &str), ApiError> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or_else(|| invalid("Expected a quoted value."))?;
    let mut value = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.extend(chars.next().map(|(_, c)| c)),
            c if c == quote => return Ok((value, &text[i + 1..])),
            c => value.push(c),
        }
    }
    Err(invalid("A quoted value is not closed."))
}

impl Clause {
    fn matches(&self, object: &Value) -> bool {
        let field = match &self.key {
            Some(key) => &object["metadata"][key],
            None => self.field.split('.').fold(object, |v, part| &v[part]),
        };
        let found = match (&self.value, self.op) {
            (Operand::Null, _) => field.is_null(),
            (Operand::Number(n), op) => field.as_f64().is_some_and(|f| match op {
                Op::Greater => f > *n,
                Op::GreaterOrEqual => f >= *n,
                Op::Less => f < *n,
                Op::LessOrEqual => f <= *n,
                _ => f == *n,
            }),
            (Operand::Text(t), op) => {
                let actual = match field {
                    Value::String(s) => s.to_lowercase(),
                    Value::Null => return self.negated,
                    other => other.to_string().to_lowercase(),
                };
                let wanted = t.to_lowercase();
                match op {
                    Op::Contains => actual.contains(&wanted),
                    // A text field matches when it holds the query's words in order.
                    _ if self.kind == Field::Text => {
                        let words: Vec<&str> = actual.split_whitespace().collect();
                        let wanted: Vec<&str> = wanted.split_whitespace().collect();
                        !wanted.is_empty() && words.windows(wanted.len()).any(|w| w == wanted.as_slice())
                    }
                    _ => actual == wanted,
                }
            }
        };
        found != self.negated
    }
}

impl Query {
    fn matches(&self, object: &Value) -> bool {
        if self.any {
            self.clauses.iter().any(|c| c.matches(object))
        } else {
            self.clauses.iter().all(|c| c.matches(object))
        }
    }
}

/// A search endpoint: `query`, `limit`, `page` (the `next_page` of the previous answer), `expand`.
pub fn search_kind(emulator: &Emulator, request: &ApiRequest, kind: &'static str, fields: &[(&str, Field)]) -> ApiResult {
    let p = &request.params;
    p.allow(&["query", "limit", "page", "expand"])?;
    let query = parse(p.required_str("query")?, fields)?;
    let limit = match p.int("limit")? {
        None => 10,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(_) => return Err(p.invalid("limit", "limit must be between 1 and 100.")),
    };
    let offset = match p.non_empty_str("page")? {
        None => 0,
        Some(page) => {
            page.strip_prefix("page_").and_then(|n| n.parse::<usize>().ok()).ok_or_else(|| p.invalid("page", "Invalid page cursor."))?
        }
    };
    let expand = request.expand()?;
    emulator.read(|store| {
        let found: Vec<&Value> = store.iter_kind(kind, None).filter(|o| query.matches(o)).skip(offset).take(limit + 1).collect();
        let has_more = found.len() > limit;
        let data: Vec<&Value> = found.into_iter().take(limit).collect();
        let tree = ExpandTree::for_list(store, &data, &expand)?;
        let next_page = has_more.then(|| format!("page_{}", offset + limit));
        let body = ListPage { store, data, has_more, url: &request.path, tree: &tree, next_page: Some(next_page) };
        Ok(JsonBody(serde_json::to_vec(&body).unwrap_or_default()))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FIELDS: &[(&str, Field)] =
        &[("email", Field::Text), ("name", Field::Text), ("metadata", Field::Token), ("status", Field::Token), ("created", Field::Numeric)];

    fn matches(query: &str, object: &Value) -> bool {
        parse(query, FIELDS).unwrap().matches(object)
    }

    #[test]
    fn the_query_forms_apps_use() {
        let ada = json!({ "email": "Ada@Example.com", "name": "Ada King Lovelace", "metadata": { "userId": "user_1" }, "status": "active", "created": 100 });
        assert!(matches("metadata['userId']:'user_1'", &ada));
        assert!(matches(r#"metadata["userId"]:"user_1""#, &ada));
        assert!(!matches("metadata['userId']:'user_2'", &ada));
        assert!(matches("email:'ada@example.com'", &ada), "exact and case-insensitive");
        assert!(!matches("email:'ada@example'", &ada));
        assert!(matches("name:'king lovelace'", &ada), "words in order");
        assert!(!matches("name:'lovelace king'", &ada));
        assert!(matches("email~'example'", &ada));
        assert!(matches("status:'active' AND created>50", &ada));
        assert!(matches("status:'active' created>=100", &ada), "a space is AND");
        assert!(!matches("status:'active' AND created<100", &ada));
        assert!(matches("status:'canceled' OR email:'ada@example.com'", &ada));
        assert!(matches("-status:'canceled'", &ada));
        assert!(matches("metadata['plan']:null", &ada));
        assert!(matches("-metadata['userId']:null", &ada));
        assert!(matches(r"name:'it\'s'", &json!({ "name": "it's" })));
    }

    #[test]
    fn malformed_queries_are_refused() {
        for bad in [
            "",
            "status:'active' AND email:'a' OR name:'b'",
            "phone:'1'",
            "email>3",
            "email~'ab'",
            "created~'abc'",
            "email:unquoted",
            "email:'open",
            "metadata:'x'",
            "status",
        ] {
            let err = parse(bad, FIELDS).expect_err(bad);
            assert_eq!(err.status.as_u16(), 400, "{bad}");
            assert_eq!(err.param.as_deref(), Some("query"));
        }
    }
}
