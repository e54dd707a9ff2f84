//! The crate's top-level modules depend on each other one way only.
//!
//! Reads every `src/**/*.rs` (except `lib.rs` and the binaries), maps each file to its
//! top-level module, collects the `crate::<module>` references (in `use` lines,
//! grouped `use crate::{a, b}`, inline paths, doc links, and `crate::<macro>!` calls,
//! which count for the module that defines the macro), and asserts that the graph has
//! no cycle, that every dependency points down the layer order of [`LAYERS`] (or stays
//! within a layer), and that docs/architecture.md lists it as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The layers, top first: a module may use modules of its own layer or of any layer
/// below, never one above. Every top-level module is in exactly one layer. Modules that
/// do not exist yet (`grpc`, `service`) hold their place, so the order is settled before
/// they arrive.
///
/// The event pipeline runs relay -> Kafka -> worker -> Postgres as data; as code, `relay`
/// and `worker` sit with the processes and use the stores below (`kafka`, `persistence`).
/// `worker` is a process (the `worker` binary's library: consumer, partition leases,
/// migrate and reconcile), and reconcile's repair restores holds with the reservation
/// record layout, so it sits above the domain.
const LAYERS: &[(&str, &[&str])] = &[
    ("processes", &["api", "worker", "relay"]),
    ("fronts", &["http", "grpc"]),
    ("service", &["service"]),
    ("domain", &["reservation", "catalog", "waiting_room", "availability"]),
    ("stores", &["stock", "outbox", "script", "rate_limit", "payment", "seating", "persistence", "kafka"]),
    ("infrastructure", &["infrastructure", "config", "telemetry", "auth", "server"]),
    ("leaves", &["ids", "contract", "milliseconds", "validation", "retry", "shutdown", "client_address", "keyspace"]),
];

/// The layer index of `module` (0 is the top), if [`LAYERS`] lists it.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

/// Every dependency that points up the layer order, as `from (layer) -> to (layer)`.
fn upward_edges(graph: &Graph) -> Vec<String> {
    let mut upward = Vec::new();
    for (module, dependencies) in graph {
        let Some(from) = layer_of(module) else { continue };
        for dependency in dependencies {
            match layer_of(dependency) {
                Some(to) if to < from => upward.push(format!(
                    "{module} ({}) -> {dependency} ({}): `{module}` must not use `{dependency}`, which is in a higher layer",
                    LAYERS[from].0, LAYERS[to].0
                )),
                _ => {}
            }
        }
    }
    upward
}

const LISTING_START: &str = "<!-- module-graph:start -->";
const LISTING_END: &str = "<!-- module-graph:end -->";

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> =
        fs::read_dir(directory).expect("src is readable").map(|entry| entry.expect("readable entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/http/error.rs` is `http`; `None` for
/// the crate root and the binaries.
fn top_level_module(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).expect("under src");
    let first = relative.components().next()?.as_os_str().to_str()?.to_owned();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        _ => Some(first.trim_end_matches(".rs").to_owned()),
    }
}

fn identifier_at(text: &str) -> &str {
    let end =
        text.find(|character: char| !(character.is_ascii_alphanumeric() || character == '_')).unwrap_or(text.len());
    &text[..end]
}

/// Every name that follows `crate::`, including each first name of a group
/// `crate::{a, b::c, d::{e, f}}`.
fn crate_references(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (index, _) in source.match_indices("crate::") {
        let rest = &source[index + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (offset, character) in group.char_indices() {
                match character {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    character if item_start && !character.is_whitespace() => {
                        names.insert(identifier_at(&group[offset..]).to_owned());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(identifier_at(rest).to_owned());
        }
    }
    names
}

/// Macros exported at the crate root (`crate::name!`), by the module that defines them.
fn macro_homes(sources: &[(String, String)]) -> BTreeMap<String, String> {
    let mut homes = BTreeMap::new();
    for (module, source) in sources {
        for (index, _) in source.match_indices("macro_rules!") {
            let name = identifier_at(source[index + "macro_rules!".len()..].trim_start());
            homes.insert(name.to_owned(), module.clone());
        }
    }
    homes
}

fn module_graph() -> Graph {
    let root = source_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let sources: Vec<(String, String)> = files
        .iter()
        .filter_map(|file| {
            let module = top_level_module(&root, file)?;
            Some((module, fs::read_to_string(file).expect("source is readable")))
        })
        .collect();
    let macros = macro_homes(&sources);
    let mut graph = Graph::new();
    for (module, _) in &sources {
        graph.entry(module.clone()).or_default();
    }
    for (module, source) in &sources {
        for name in crate_references(source) {
            let target = macros.get(&name).cloned().unwrap_or(name);
            if &target != module && graph.contains_key(&target) {
                graph.get_mut(module).expect("every module is a node").insert(target);
            }
        }
    }
    graph
}

/// A cycle as a path `a -> b -> ... -> a`, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }
    fn visit<'a>(
        graph: &'a Graph,
        node: &'a str,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(node, Mark::OnPath);
        path.push(node);
        for next in &graph[node] {
            match marks[next.as_str()] {
                Mark::OnPath => {
                    let start = path.iter().position(|step| *step == next).expect("on the path");
                    let mut cycle: Vec<String> = path[start..].iter().map(|step| step.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::Unvisited => {
                    if let Some(cycle) = visit(graph, next, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks: BTreeMap<&str, Mark> = graph.keys().map(|node| (node.as_str(), Mark::Unvisited)).collect();
    for node in graph.keys() {
        if marks[node.as_str()] == Mark::Unvisited
            && let Some(cycle) = visit(graph, node, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// One line per module: `module -> its dependencies`.
fn listing(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(module, dependencies)| {
            let dependencies: Vec<&str> = dependencies.iter().map(String::as_str).collect();
            match dependencies.is_empty() {
                true => format!("{module}\n"),
                false => format!("{module} -> {}\n", dependencies.join(", ")),
            }
        })
        .collect()
}

#[test]
fn modules_have_no_dependency_cycle() {
    // Goal: data flows one way between modules, so none can be understood only together with another.
    let graph = module_graph();
    println!("{}", listing(&graph));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module dependency cycle: {}\n\nthe graph:\n{}", cycle.join(" -> "), listing(&graph));
    }
}

#[test]
fn dependencies_point_down_the_layers() {
    // Goal: fronts use the service, the service uses the domain, the domain uses stores and stores use infrastructure, never the other way.
    let graph = module_graph();
    let unplaced: Vec<&String> = graph.keys().filter(|module| layer_of(module).is_none()).collect();
    assert!(unplaced.is_empty(), "put these modules into a layer of LAYERS in tests/module_graph.rs: {unplaced:?}");
    let upward = upward_edges(&graph);
    assert!(upward.is_empty(), "dependencies that point up the layers:\n{}", upward.join("\n"));
}

#[test]
fn architecture_lists_the_module_graph() {
    // Goal: docs/architecture.md shows the module dependencies as they are.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md");
    let document = fs::read_to_string(&path).expect("docs/architecture.md is readable");
    let start = document.find(LISTING_START).expect("architecture.md has the module-graph start marker");
    let end = document.find(LISTING_END).expect("architecture.md has the module-graph end marker");
    let documented =
        document[start + LISTING_START.len()..end].trim().trim_start_matches("```").trim_end_matches("```");
    let actual = listing(&module_graph());
    assert_eq!(documented.trim(), actual.trim(), "update the listing in docs/architecture.md to:\n{actual}");
}

#[test]
fn the_layout_lists_every_module() {
    // Goal: lib.rs's "# Layout" has one line for each top-level module, and no other.
    let library = fs::read_to_string(source_root().join("lib.rs")).expect("lib.rs is readable");
    let declared: BTreeSet<&str> =
        library.lines().filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    let listed: BTreeSet<&str> =
        library.lines().filter_map(|line| line.strip_prefix("//! - [`")?.split('`').next()).collect();
    assert_eq!(listed, declared, "lib.rs's # Layout list and its `pub mod` lines differ");
}

#[test]
fn references_in_groups_and_paths_are_found() {
    // Goal: the parser sees grouped, nested and inline references, not only simple `use` lines.
    let source = "use crate::{alpha, beta::{x, y}, gamma::Z};\nfn f() { crate::delta::run(); }\n";
    let names: Vec<String> = crate_references(source).into_iter().collect();
    assert_eq!(names, ["alpha", "beta", "delta", "gamma"]);
    let cyclic = Graph::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(find_cycle(&cyclic).expect("a cycle"), ["a", "b", "c", "a"]);
    let upward = Graph::from([("stock".to_owned(), BTreeSet::from(["reservation".to_owned(), "ids".to_owned()]))]);
    assert_eq!(
        upward_edges(&upward),
        ["stock (stores) -> reservation (domain): `stock` must not use `reservation`, which is in a higher layer"]
    );
    let mut listed = BTreeSet::new();
    for (_, modules) in LAYERS {
        for module in *modules {
            assert!(listed.insert(*module), "{module} is in two layers");
        }
    }
}
