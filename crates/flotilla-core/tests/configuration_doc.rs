//! `docs/configuration.md` against the code: every setting of the configuration is listed,
//! every listed setting exists, and every default the document shows is the one in force.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};

use flotilla_core::FlotillaConfig;

const DOC: &str = include_str!("../../../docs/configuration.md");

/// What the document says a setting's default is.
#[derive(Debug, Clone)]
enum Documented {
    /// A TOML value.
    Value(String),
    /// None by default; an example value.
    Optional(String),
    /// Must be given when its section is; an example value.
    Required(String),
}

/// Section (`cluster.failure-detector`) → key → default.
fn rows() -> BTreeMap<String, BTreeMap<String, Documented>> {
    let mut out: BTreeMap<String, BTreeMap<String, Documented>> = BTreeMap::new();
    let mut section = None;
    for line in DOC.lines() {
        if let Some(s) = line.strip_prefix("## [").and_then(|l| l.strip_suffix(']')) {
            section = Some(s.to_owned());
            continue;
        }
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let section = section
            .clone()
            .unwrap_or_else(|| panic!("a row outside a section: {line}"));
        let cells: Vec<&str> = row.split(" | ").collect();
        let key = cells[0].trim_end_matches('`').to_owned();
        let default = cells[1];
        let example = || {
            let (_, rest) = default
                .split_once("e.g. `")
                .unwrap_or_else(|| panic!("{section}.{key}: no example in {default:?}"));
            rest.split('`').next().unwrap().to_owned()
        };
        let documented = if default.starts_with("none") {
            Documented::Optional(example())
        } else if default.starts_with("required") {
            Documented::Required(example())
        } else {
            let v = default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .unwrap_or_else(|| {
                    panic!("{section}.{key}: the default {default:?} is not `a value`")
                });
            Documented::Value(v.to_owned())
        };
        let previous = out
            .entry(section.clone())
            .or_default()
            .insert(key.clone(), documented);
        assert!(previous.is_none(), "{section}.{key} is listed twice");
    }
    out
}

/// The TOML header of a documented section (a real phase for the phases' placeholder).
fn header(section: &str) -> String {
    format!("[{}]", section.replace("<phase>", "cluster-leave"))
}

/// A document with the section's required keys (their examples), plus `extra`.
fn with_required(section: &str, keys: &BTreeMap<String, Documented>, extra: &str) -> String {
    let mut doc = format!("{}\n", header(section));
    for (k, d) in keys {
        if let Documented::Required(example) = d {
            doc.push_str(&format!("{k} = {example}\n"));
        }
    }
    doc.push_str(extra);
    doc
}

fn parse(doc: &str) -> Result<FlotillaConfig, String> {
    FlotillaConfig::from_toml_str(doc).map_err(|e| format!("{e}\nin:\n{doc}"))
}

#[test]
fn every_documented_default_is_the_one_in_force() {
    let rows = rows();
    assert!(
        rows.values().map(BTreeMap::len).sum::<usize>() > 80,
        "{rows:#?}"
    );
    for (section, keys) in &rows {
        let base = with_required(section, keys, "");
        let plain = parse(&base).unwrap();
        for (key, d) in keys {
            match d {
                Documented::Value(v) => {
                    let doc = with_required(section, keys, &format!("{key} = {v}\n"));
                    assert_eq!(
                        parse(&doc).unwrap(),
                        plain,
                        "{section}.{key}: the documented default {v} is not the default"
                    );
                }
                Documented::Optional(example) => {
                    let doc = with_required(section, keys, &format!("{key} = {example}\n"));
                    let set = parse(&doc).unwrap();
                    assert_ne!(set, plain, "{section}.{key} = {example} changed nothing");
                }
                Documented::Required(_) => {
                    let without: String = base
                        .lines()
                        .filter(|l| !l.starts_with(&format!("{key} =")))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    assert!(
                        parse(&without).is_err(),
                        "{section}.{key} is documented as required, but the section parses without it"
                    );
                }
            }
        }
    }
}

/// Every leaf of the default configuration as JSON, where absent optional settings are null:
/// (section, key).
fn settings() -> BTreeSet<(String, String)> {
    fn walk(section: &str, v: &serde_json::Value, out: &mut BTreeSet<(String, String)>) {
        let serde_json::Value::Object(map) = v else {
            return;
        };
        for (k, v) in map {
            if v.is_object() {
                let nested = if section.is_empty() {
                    k.clone()
                } else {
                    format!("{section}.{k}")
                };
                walk(&nested, v, out);
            } else {
                out.insert((section.to_owned(), k.clone()));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(
        "",
        &serde_json::to_value(FlotillaConfig::default()).unwrap(),
        &mut out,
    );
    out
}

#[test]
fn every_setting_is_documented() {
    let rows = rows();
    let documented: BTreeSet<(String, String)> = rows
        .iter()
        .flat_map(|(s, keys)| keys.keys().map(move |k| (s.clone(), k.clone())))
        .collect();
    let all = settings();
    assert!(all.len() > 80, "{all:?}");
    for (section, key) in all {
        // An optional table, absent by default, is documented as a section of its own.
        if rows.contains_key(&format!("{section}.{key}")) {
            continue;
        }
        assert!(
            documented.contains(&(section.clone(), key.clone())),
            "{section}.{key} is not in docs/configuration.md"
        );
    }
    // The other direction is every_documented_default_is_the_one_in_force: every row parses,
    // and unknown keys are refused, so no row names a setting that does not exist.
    for phase in flotilla_core::Phase::ALL {
        assert!(
            DOC.contains(&format!("`{}`", phase.as_str())),
            "phase {phase} is not listed"
        );
    }
}
