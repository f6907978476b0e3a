// SPDX-License-Identifier: Apache-2.0
//! Keeps the distribution files valid and consistent with each other and
//! with the app: the desktop entry, the AppStream metainfo, the icons and
//! the `cargo deb` assets in app/Cargo.toml. When `desktop-file-validate`
//! and `appstreamcli` are installed they must accept the files (with
//! `NESTBOX_REQUIRE_KVM=1`, as in CI, they must be installed).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const DESKTOP_FILE: &str = "packaging/nestbox.desktop";
const METAINFO_FILE: &str = "packaging/org.nestbox.Nestbox.metainfo.xml";
const ICON_SVG: &str = "assets/nestbox.svg";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let full = repo_root().join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A desktop entry file: group name -> key -> value, in file order of groups.
type Groups = Vec<(String, BTreeMap<String, String>)>;

fn parse_desktop_entry(text: &str) -> Groups {
    let mut groups: Groups = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            assert!(
                groups.iter().all(|(g, _)| g != name),
                "line {n}: group [{name}] twice"
            );
            groups.push((name.to_string(), BTreeMap::new()));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {n}: not key=value: {line:?}"));
        let (key, value) = (key.trim(), value.trim());
        assert!(!key.is_empty(), "line {n}: empty key");
        let (_, entries) = groups
            .last_mut()
            .unwrap_or_else(|| panic!("line {n}: key before the first group"));
        assert!(
            entries.insert(key.to_string(), value.to_string()).is_none(),
            "line {n}: key {key} twice"
        );
    }
    groups
}

fn desktop_entry() -> BTreeMap<String, String> {
    let groups = parse_desktop_entry(&read(DESKTOP_FILE));
    let (first, entry) = groups.first().expect("the desktop file has no group");
    assert_eq!(
        first, "Desktop Entry",
        "the first group must be [Desktop Entry]"
    );
    entry.clone()
}

/// A minimal XML element tree: enough to check well-formedness and read
/// element texts and attributes.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text_of(&self, name: &str) -> String {
        self.child(name)
            .unwrap_or_else(|| panic!("<{}> has no <{name}>", self.name))
            .text
            .trim()
            .to_string()
    }
}

fn parse_attrs(s: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("attribute without a value: {rest:?}"));
        let after = after.trim_start();
        let quote = after.chars().next().expect("attribute value missing");
        assert!(
            quote == '"' || quote == '\'',
            "unquoted attribute value: {after:?}"
        );
        let end = after[1..]
            .find(quote)
            .unwrap_or_else(|| panic!("unterminated attribute value: {after:?}"));
        let key = key.trim().to_string();
        assert!(
            attrs
                .insert(key.clone(), after[1..=end].to_string())
                .is_none(),
            "attribute {key} twice"
        );
        rest = after[end + 2..].trim_start();
    }
    attrs
}

/// Parses an XML document (no DTD, no CDATA) into its root element; panics
/// on anything not well-formed.
fn parse_xml(text: &str) -> Element {
    let mut rest = text.trim_start_matches('\u{feff}');
    let mut stack: Vec<Element> = vec![Element::default()];
    while let Some(lt) = rest.find('<') {
        let content = &rest[..lt];
        assert!(!content.contains('>'), "stray '>' in {content:?}");
        stack.last_mut().unwrap().text.push_str(content);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").expect("unterminated comment");
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("<?") {
            let end = after
                .find("?>")
                .expect("unterminated processing instruction");
            rest = &after[end + 2..];
        } else if rest.starts_with("<!") {
            panic!("DTDs and CDATA are not expected: {:.40}", rest);
        } else {
            let end = rest.find('>').expect("unterminated tag");
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().unwrap();
                assert_eq!(open.name, name.trim(), "mismatched closing tag");
                assert!(!stack.is_empty(), "closing tag </{name}> with nothing open");
                stack.last_mut().unwrap().children.push(open);
            } else {
                let (tag, empty) = match tag.strip_suffix('/') {
                    Some(t) => (t, true),
                    None => (tag, false),
                };
                let (name, attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
                assert!(
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)),
                    "bad element name {name:?}"
                );
                let element = Element {
                    name: name.to_string(),
                    attrs: parse_attrs(attrs),
                    ..Element::default()
                };
                if empty {
                    stack.last_mut().unwrap().children.push(element);
                } else {
                    stack.push(element);
                }
            }
        }
    }
    assert!(!rest.contains('>'), "stray '>' after the last tag");
    assert_eq!(
        stack.len(),
        1,
        "unclosed element <{}>",
        stack.last().unwrap().name
    );
    let mut document = stack.pop().unwrap();
    assert!(
        document.text.trim().is_empty(),
        "text outside the root element"
    );
    assert_eq!(
        document.children.len(),
        1,
        "an XML document has exactly one root"
    );
    document.children.pop().unwrap()
}

fn metainfo() -> Element {
    parse_xml(&read(METAINFO_FILE))
}

fn manifest() -> toml::Table {
    read("app/Cargo.toml")
        .parse()
        .expect("app/Cargo.toml is not TOML")
}

fn workspace_manifest() -> toml::Table {
    read("Cargo.toml").parse().expect("Cargo.toml is not TOML")
}

/// The name of the app's one binary, from app/Cargo.toml.
fn binary_name() -> String {
    let manifest = manifest();
    let bins = manifest["bin"].as_array().expect("[[bin]] missing");
    assert_eq!(bins.len(), 1, "expected one [[bin]]");
    bins[0]["name"].as_str().unwrap().to_string()
}

/// (source, dest) of each asset in [package.metadata.deb].
fn deb_assets() -> Vec<(String, String)> {
    let manifest = manifest();
    let deb = &manifest["package"]["metadata"]["deb"];
    deb["assets"]
        .as_array()
        .expect("[package.metadata.deb] has no assets")
        .iter()
        .map(|asset| match asset {
            toml::Value::Array(a) => {
                assert_eq!(a.len(), 3, "an asset is [source, dest, mode]: {a:?}");
                let mode = a[2].as_str().unwrap();
                assert!(
                    mode.len() == 3 && mode.chars().all(|c| ('0'..='7').contains(&c)),
                    "bad mode {mode:?}"
                );
                (
                    a[0].as_str().unwrap().to_string(),
                    a[1].as_str().unwrap().to_string(),
                )
            }
            other => panic!("unexpected asset {other:?}"),
        })
        .collect()
}

/// Every `with_app_id("...")` in the app's sources.
fn app_ids_in_sources() -> Vec<String> {
    fn walk(dir: &Path, ids: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, ids);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).unwrap();
                for part in text.split("with_app_id(\"").skip(1) {
                    ids.push(part.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    let mut ids = Vec::new();
    walk(&repo_root().join("app/src"), &mut ids);
    ids
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR", "{}: no IHDR first", path.display());
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn test_desktop_entry_names_the_app() {
    let entry = desktop_entry();
    let bin = binary_name();
    for key in [
        "Type",
        "Name",
        "GenericName",
        "Comment",
        "Exec",
        "Icon",
        "Categories",
    ] {
        assert!(entry.contains_key(key), "{DESKTOP_FILE}: {key} missing");
    }
    assert_eq!(entry["Type"], "Application");
    assert_eq!(entry["Name"], "Nestbox");
    assert_eq!(entry["Terminal"], "false");
    let exec: Vec<&str> = entry["Exec"].split_whitespace().collect();
    assert_eq!(exec[0], bin, "Exec must run the {bin} binary");
    // `nestbox FILE` opens the New VM wizard on FILE: the entry takes a
    // file exactly when it claims file types.
    let takes_files = exec[1..]
        .iter()
        .any(|a| ["%f", "%F", "%u", "%U"].contains(a));
    assert_eq!(
        takes_files,
        entry.contains_key("MimeType"),
        "Exec takes files exactly when MimeType is set"
    );
    assert_eq!(entry["Icon"], bin);
    let categories: Vec<&str> = entry["Categories"].split_terminator(';').collect();
    assert!(categories.contains(&"System") && categories.contains(&"Emulator"));
    // The window's WM_CLASS / Wayland app_id is what links it to the entry.
    let ids = app_ids_in_sources();
    assert!(!ids.is_empty(), "no with_app_id(...) found in app/src");
    for id in ids {
        assert_eq!(
            id, entry["StartupWMClass"],
            "window app id vs StartupWMClass"
        );
        let desktop_id = Path::new(DESKTOP_FILE).file_stem().unwrap();
        assert_eq!(
            id,
            desktop_id.to_str().unwrap(),
            "window app id vs desktop file name"
        );
    }
}

#[test]
fn test_metainfo_matches_the_desktop_entry_and_manifest() {
    let component = metainfo();
    assert_eq!(component.name, "component");
    assert_eq!(component.attrs["type"], "desktop-application");
    let id = component.text_of("id");
    let file_name = Path::new(METAINFO_FILE)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        file_name,
        format!("{id}.metainfo.xml"),
        "metainfo file name vs <id>"
    );
    assert_eq!(component.text_of("metadata_license"), "CC0-1.0");
    let workspace = workspace_manifest();
    let license = workspace["workspace"]["package"]["license"]
        .as_str()
        .unwrap();
    assert_eq!(component.text_of("project_license"), license);
    let entry = desktop_entry();
    assert_eq!(component.text_of("name"), entry["Name"]);
    assert!(!component.text_of("summary").is_empty());
    assert!(
        component
            .child("description")
            .is_some_and(|d| !d.children.is_empty())
    );
    assert!(component.child("content_rating").is_some());

    let launchable = component.child("launchable").expect("<launchable> missing");
    assert_eq!(launchable.attrs["type"], "desktop-id");
    let desktop_name = Path::new(DESKTOP_FILE)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(launchable.text.trim(), desktop_name);

    let binary = component.child("provides").map(|p| p.text_of("binary"));
    assert_eq!(binary, Some(binary_name()));

    let categories: Vec<String> = component
        .child("categories")
        .expect("<categories> missing")
        .children
        .iter()
        .map(|c| c.text.trim().to_string())
        .collect();
    let desktop_categories: Vec<&str> = entry["Categories"].split_terminator(';').collect();
    for c in &categories {
        assert!(
            desktop_categories.contains(&c.as_str()),
            "category {c} not in the desktop file"
        );
    }
    // AppStream wants absolute URLs; relative screenshot paths are invalid.
    if let Some(shots) = component.child("screenshots") {
        for image in shots.children.iter().flat_map(|s| &s.children) {
            assert!(
                image.text.trim().starts_with("https://"),
                "screenshot {:?}",
                image.text
            );
        }
    }
}

#[test]
fn test_deb_assets_exist_and_install_where_desktops_look() {
    let manifest = manifest();
    let deb = &manifest["package"]["metadata"]["deb"];
    for key in [
        "maintainer",
        "copyright",
        "extended-description",
        "depends",
        "section",
        "priority",
    ] {
        assert!(
            deb.get(key).is_some(),
            "[package.metadata.deb] {key} missing"
        );
    }
    let depends = deb["depends"].as_str().unwrap();
    for lib in [
        "libc6",
        "libgl1",
        "libegl1",
        "libx11-6",
        "libxkbcommon0",
        "libasound2",
    ] {
        assert!(
            depends
                .split(',')
                .any(|d| d.trim().split(' ').next() == Some(lib)),
            "depends lacks {lib}"
        );
    }

    let bin = binary_name();
    let package_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let assets = deb_assets();
    for (source, dest) in &assets {
        assert!(
            !dest.starts_with('/'),
            "cargo-deb destinations are relative: {dest}"
        );
        if let Some(built) = source.strip_prefix("target/release/") {
            assert_eq!(built, bin, "the only built asset is the binary");
            assert_eq!(dest, "usr/bin/");
        } else {
            assert!(
                package_dir.join(source).is_file(),
                "deb asset {source} does not exist"
            );
        }
    }
    // Where each repository file is installed (a destination ending in '/'
    // is a directory).
    let installed: Vec<(String, String)> = assets
        .iter()
        .map(|(source, dest)| {
            let file = Path::new(source).file_name().unwrap().to_str().unwrap();
            let dest = match dest.strip_suffix('/') {
                Some(dir) => format!("{dir}/{file}"),
                None => dest.clone(),
            };
            (
                source.strip_prefix("../").unwrap_or(source).to_string(),
                dest,
            )
        })
        .collect();
    let installs =
        |source: &str, dest: &str| installed.iter().any(|(s, d)| s == source && d == dest);
    assert!(installs(
        DESKTOP_FILE,
        "usr/share/applications/nestbox.desktop"
    ));
    assert!(installs(
        METAINFO_FILE,
        "usr/share/metainfo/org.nestbox.Nestbox.metainfo.xml"
    ));
    let icon = desktop_entry()["Icon"].clone();
    assert!(installs(
        ICON_SVG,
        &format!("usr/share/icons/hicolor/scalable/apps/{icon}.svg")
    ));
    for size in [48, 128, 256] {
        let png = format!("assets/nestbox-{size}.png");
        let dest = format!("usr/share/icons/hicolor/{size}x{size}/apps/{icon}.png");
        assert!(installs(&png, &dest), "{png} is not installed as {dest}");
        assert_eq!(png_size(&repo_root().join(&png)), (size, size), "{png}");
    }
}

#[test]
fn test_icon_svg_is_well_formed() {
    let svg = parse_xml(&read(ICON_SVG));
    assert_eq!(svg.name, "svg");
    assert_eq!(svg.attrs["viewBox"], "0 0 256 256");
    assert!(!read(ICON_SVG).contains("<text"), "the icon has no text");
}

/// Runs a validator on the repository's files, or says why it cannot.
fn validate(tool: &str, args: &[&str]) {
    match Command::new(tool)
        .args(args)
        .current_dir(repo_root())
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{tool} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => nestbox_tests::skipped_missing(
            &format!("{tool} {args:?}"),
            &format!("{tool} cannot run: {e} (Debian: desktop-file-utils, appstream)"),
        ),
    }
}

#[test]
fn test_desktop_file_validate_accepts_the_desktop_entry() {
    validate("desktop-file-validate", &[DESKTOP_FILE]);
}

#[test]
fn test_appstreamcli_accepts_the_metainfo() {
    validate("appstreamcli", &["validate", "--no-net", METAINFO_FILE]);
}
