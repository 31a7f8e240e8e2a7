//! Printing results: one JSON object on stdout with `--json`, readable lines otherwise.

use serde_json::Value;

/// Prints `value` as one JSON line, or as `key: value` lines for people.
pub fn print(value: &Value, json: bool) {
    if json {
        println!("{value}");
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => println!("{k}: {s}"),
                    other => println!("{k}: {other}"),
                }
            }
        }
        other => println!("{other}"),
    }
}
