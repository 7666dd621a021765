//! Tidy: every crate's modules sit in the layers its `lib.rs` declares, and no imports go in
//! a circle. Reads the `crate::…` and `super::…` paths of every source file (test modules,
//! comments and string literals left out), resolves each to the module it names, and fails
//! on a module that uses one of a higher layer, on a module no layer names, and on any
//! cycle between modules (files). `TIDY_PRINT=1` prints each crate's module graph.
//!
//! A layer declaration in `lib.rs` is a numbered list in the crate documentation, bottom
//! layer first, naming modules in backticks (`a` covers `a` and everything under it; a
//! longer path such as `a::b` takes precedence for its own part):
//!
//! ```text
//! //! Layers (bottom first):
//! //! 1. `ids`, `limits`
//! //! 2. `policy`
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates checked, by source directory.
const CRATES: &[&str] = &["core/src", "media/src", "storage/src", "signaling/src", "src"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every module file of a crate, by module path ("" is the crate root); binaries left out.
fn module_files(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(src).unwrap();
            if path.is_dir() {
                if relative != Path::new("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let mut segments: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if segments
                .last()
                .is_some_and(|s| s == "mod" || s == "lib" || s == "main")
            {
                segments.pop();
            }
            out.insert(segments.join("::"), path);
        }
    }
    out
}

/// The source without comments, string literals and the trailing test module.
fn code_of(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    // String literals (good enough for this codebase: no raw strings with quotes in paths).
    let mut out = String::with_capacity(kept.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut previous = ' ';
    for c in kept.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' && previous != '\'' {
            in_string = true;
        } else {
            out.push(c);
        }
        previous = c;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Paths written after `crate::` (or `super::`) at `rest`, with `{…}` groups expanded.
fn expand(rest: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut segments = prefix.to_vec();
    let mut chars = rest;
    loop {
        let ident: String = chars.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            if let Some(group) = chars.strip_prefix('{') {
                let mut depth = 1;
                let mut end = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let inner = &group[..end];
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(inner[start..i].trim(), &segments, out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                expand(inner[start..].trim(), &segments, out);
                return;
            }
            break;
        }
        chars = &chars[ident.len()..];
        segments.push(ident);
        match chars.strip_prefix("::") {
            Some(next) => chars = next,
            None => break,
        }
    }
    if segments.len() > prefix.len() || !prefix.is_empty() {
        out.push(segments);
    }
}

/// The module a path names: the longest prefix that is a module of the crate.
fn resolve(segments: &[String], modules: &BTreeMap<String, PathBuf>) -> String {
    for len in (1..=segments.len()).rev() {
        let candidate = segments[..len].join("::");
        if modules.contains_key(&candidate) {
            return candidate;
        }
    }
    String::new()
}

/// The modules `module` (whose code is `code`) uses.
fn uses(module: &str, code: &str, modules: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let mut paths = Vec::new();
    for keyword in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(keyword) {
            let at = from + found;
            from = at + keyword.len();
            let before = code[..at].chars().next_back().unwrap_or(' ');
            if is_ident(before) || before == '$' || (keyword == "super::" && before == ':') {
                continue;
            }
            let mut prefix: Vec<String> = Vec::new();
            if keyword == "super::" {
                // The parent of this file's module, and one more per further `super::`.
                let mut parent: Vec<String> = module.split("::").map(str::to_owned).collect();
                parent.pop();
                let mut rest = &code[from..];
                while let Some(next) = rest.strip_prefix("super::") {
                    parent.pop();
                    rest = next;
                    from += "super::".len();
                }
                prefix = parent;
            }
            expand(&code[from..], &prefix, &mut paths);
        }
    }
    paths
        .iter()
        .map(|p| resolve(p, modules))
        .filter(|target| !target.is_empty() && target != module)
        .collect()
}

/// The layer declaration of a crate root: layer index per declared module path.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        let Some((number, rest)) = doc.split_once(". ") else {
            continue;
        };
        let Ok(layer) = number.parse::<usize>() else {
            continue;
        };
        for (i, part) in rest.split('`').enumerate() {
            if i % 2 == 1 && !part.is_empty() {
                out.insert(part.to_owned(), layer);
            }
        }
    }
    out
}

/// The layer of a module: that of its longest declared prefix.
fn layer_of(module: &str, declared: &BTreeMap<String, usize>) -> Option<usize> {
    let segments: Vec<&str> = module.split("::").collect();
    (1..=segments.len())
        .rev()
        .find_map(|len| declared.get(&segments[..len].join("::")).copied())
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        if let Some(targets) = state.graph.get(node) {
            for target in targets {
                let target = target.as_str();
                if !state.index.contains_key(target) {
                    visit(state, target);
                    let low = state.low[target].min(state.low[node]);
                    state.low.insert(node, low);
                } else if state.on_stack.contains(target) {
                    let low = state.index[target].min(state.low[node]);
                    state.low.insert(node, low);
                }
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top.to_owned());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

/// What is wrong with one crate's module graph.
fn check(src: &Path) -> Vec<String> {
    let modules = module_files(src);
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared = layers(&lib);
    let mut problems = Vec::new();
    if declared.is_empty() {
        problems.push(format!("{}: lib.rs declares no layers", src.display()));
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        if module.is_empty() {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        graph.insert(module.clone(), uses(module, &code, &modules));
    }
    if std::env::var_os("TIDY_PRINT").is_some() {
        for (module, targets) in &graph {
            println!(
                "{} {module} (layer {:?}) -> {targets:?}",
                src.display(),
                layer_of(module, &declared)
            );
        }
    }
    for (module, targets) in &graph {
        let Some(own) = layer_of(module, &declared) else {
            problems.push(format!(
                "{}: module `{module}` is in no layer of lib.rs",
                src.display()
            ));
            continue;
        };
        for target in targets {
            if let Some(theirs) = layer_of(target, &declared)
                && theirs > own
            {
                problems.push(format!(
                    "{}: `{module}` (layer {own}) uses `{target}` (layer {theirs}), a layer above it",
                    src.display()
                ));
            }
        }
    }
    for cycle in cycles(&graph) {
        problems.push(format!(
            "{}: modules import each other in a cycle: {}",
            src.display(),
            cycle.join(", ")
        ));
    }
    problems
}

#[test]
fn every_crate_imports_only_downward_and_without_cycles() {
    let problems: Vec<String> = CRATES.iter().flat_map(|src| check(&root().join(src))).collect();
    assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_grouped_paths_super_paths_and_cycles() {
    let modules: BTreeMap<String, PathBuf> = ["a", "b", "c", "d", "d::e", "d::f"]
        .iter()
        .map(|m| ((*m).to_owned(), PathBuf::new()))
        .collect();
    let code = code_of(
        "use crate::{a::Thing, b::{self, X}};\n// crate::c in a comment\nlet s = \"crate::c\";\nfn f() { crate::d::e::g(); }\n",
    );
    assert_eq!(
        uses("z", &code, &modules),
        ["a", "b", "d::e"].iter().map(|s| (*s).to_owned()).collect()
    );
    assert_eq!(
        uses("d::e", "use super::f::Y;\nuse super::super::a;", &modules),
        ["a", "d::f"].iter().map(|s| (*s).to_owned()).collect()
    );
    let cut = code_of("use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n");
    assert_eq!(
        uses("z", &cut, &modules),
        ["a"].iter().map(|s| (*s).to_owned()).collect()
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        cycles(&graph),
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
    let declared = layers("//! Layers:\n//! 1. `a`, `d`\n//! 2. `d::e`\n");
    assert_eq!(layer_of("d::f", &declared), Some(1));
    assert_eq!(layer_of("d::e", &declared), Some(2));
    assert_eq!(layer_of("x", &declared), None);
}
