//! What the service stores is what it gives back, on every backend: text
//! without NUL (Postgres cannot store it, SQLite can), and numbers that JSON
//! clients read exactly.

use serde_json::Value;

use super::{Error, Result};

/// The largest integer every JSON client reads exactly: 2^53 - 1,
/// JavaScript's `Number.MAX_SAFE_INTEGER`.
pub const MAX_EXACT_INTEGER: i64 = (1 << 53) - 1;

/// Refuses text holding NUL; `what` names it in the message.
pub fn check_text(what: &str, text: &str) -> Result<()> {
    if text.contains('\0') {
        return Err(Error::BadUserInput(format!(
            "{what} holds a NUL character (U+0000), which cannot be stored: remove it."
        )));
    }
    Ok(())
}

/// Refuses, anywhere in `value`, text holding NUL (in keys too) and numbers
/// beyond ±`MAX_EXACT_INTEGER`, which clients would read changed. `path`
/// names the value, as a client wrote it (`data`).
pub fn check_json(path: &str, value: &Value) -> Result<()> {
    match value {
        Value::String(text) => check_text(&format!("`{path}`"), text),
        Value::Number(number) => {
            let exact = number
                .as_i64()
                .map(|n| n.unsigned_abs() <= MAX_EXACT_INTEGER.unsigned_abs())
                .or_else(|| number.as_u64().map(|_| false))
                .unwrap_or_else(|| {
                    number
                        .as_f64()
                        .is_some_and(|n| n.abs() <= MAX_EXACT_INTEGER as f64)
                });
            if exact {
                return Ok(());
            }
            Err(Error::BadUserInput(format!(
                "`{path}` is {number}, beyond ±{MAX_EXACT_INTEGER}, the largest number JSON \
                 clients read exactly: send it as a string."
            )))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_json(&format!("{path}[{index}]"), item)),
        Value::Object(members) => members.iter().try_for_each(|(key, member)| {
            check_text(&format!("A key in `{path}`"), key)?;
            check_json(&format!("{path}.{key}"), member)
        }),
        Value::Null | Value::Bool(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_clients_read_exactly_pass_and_larger_ones_are_refused() {
        for fine in [
            json!(0),
            json!(-1.5),
            json!(MAX_EXACT_INTEGER),
            json!(-MAX_EXACT_INTEGER),
        ] {
            assert!(check_json("data", &json!({ "n": fine })).is_ok(), "{fine}");
        }
        for beyond in [
            json!(MAX_EXACT_INTEGER + 2),
            json!(-MAX_EXACT_INTEGER - 2),
            json!(u64::MAX),
            json!(1e300),
        ] {
            let refused = check_json("data", &json!({ "n": [beyond] }));
            let message = refused.expect_err("refused").to_string();
            assert!(message.contains("`data.n[0]`"), "{message}");
        }
    }

    #[test]
    fn nul_is_refused_in_text_and_in_keys_wherever_it_stands() {
        assert!(check_json("data", &json!({ "a": ["b\u{0}"] })).is_err());
        assert!(check_json("data", &json!({ "a": { "b\u{0}": 1 } })).is_err());
        assert!(check_json("data", &json!({ "a": ["b", { "c": "d" }] })).is_ok());
    }
}
