//! The recovery kits shipped in `host/kits`, built into the binary for the
//! demo and the tests: they write them into their own directories and name
//! those in `resources.kits`, so a binary never reads the kits of the tree
//! it was built from (and the demo works from a fresh checkout with no kits
//! installed, or from a binary copied anywhere).

use std::io;
use std::path::Path;

/// One file of a shipped kit: its path under the kits directory, its text,
/// and whether it is an action script (mode 0755) or not (0644).
#[derive(Debug, Clone, Copy)]
pub struct File {
    /// Its path under the kits directory, `app/type/...`.
    pub path: &'static str,
    /// Its contents.
    pub text: &'static str,
    /// Whether it is run (mode 0755) or read (0644).
    pub executable: bool,
}

macro_rules! shipped {
    ($($path:literal $executable:literal),* $(,)?) => {
        &[$(File {
            path: $path,
            text: include_str!(concat!("../../kits/", $path)),
            executable: $executable,
        }),*]
    };
}

/// Every file of the kits in `host/kits` (a test checks that none is
/// missing).
pub const SHIPPED: &[File] = shipped![
    "gen/app/manifest.toml" false,
    "gen/app/actions/restore" true,
    "gen/app/actions/remove" true,
    "gen/app/actions/quickCheck" true,
    "gen/app/actions/recover" true,
    "gen/app/actions/delete" true,
    "gen/appmon/manifest.toml" false,
    "gen/appmon/common.sh" false,
    "gen/appmon/actions/restore" true,
    "gen/appmon/actions/remove" true,
    "gen/appmon/actions/quickCheck" true,
    "gen/appmon/actions/recover" true,
    "gen/appmon/actions/delete" true,
];

/// The text of the shipped file `path` (`app/type/...`).
#[must_use]
pub fn text(path: &str) -> Option<&'static str> {
    SHIPPED.iter().find(|f| f.path == path).map(|f| f.text)
}

/// Writes the shipped kit `kit` (`app/type`) into `kits`, with `manifest`
/// as its manifest. Directories are made 0755, scripts 0755, other files
/// 0644, whatever the umask: safe for the daemon to run as root.
pub fn write_kit(kits: &Path, kit: &str, manifest: &str) -> io::Result<()> {
    let prefix = format!("{kit}/");
    let files: Vec<&File> = SHIPPED
        .iter()
        .filter(|f| f.path.starts_with(&prefix))
        .collect();
    if files.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no kit {kit} is shipped"),
        ));
    }
    for file in files {
        let to = kits.join(file.path);
        let text = if file.path == format!("{kit}/manifest.toml") {
            manifest
        } else {
            file.text
        };
        if let Some(dir) = to.parent() {
            make_dirs(kits, dir)?;
        }
        std::fs::write(&to, text)?;
        set_mode(&to, if file.executable { 0o755 } else { 0o644 })?;
    }
    Ok(())
}

/// Makes `dir` and its parents up to `root` (itself included), each 0755.
fn make_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut at = Some(dir);
    while let Some(d) = at {
        set_mode(d, 0o755)?;
        if d == root {
            break;
        }
        at = d.parent().filter(|p| p.starts_with(root));
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in copy is every file of `host/kits`, as it is there.
    #[test]
    fn shipped_is_the_kits_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("kits");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap();
                    on_disk.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut built: Vec<String> = SHIPPED.iter().map(|f| f.path.to_string()).collect();
        built.sort();
        assert_eq!(
            built, on_disk,
            "add the kit's files to SHIPPED in demo/kits.rs"
        );
        for file in SHIPPED {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(root.join(file.path))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o111 != 0, file.executable, "{}", file.path);
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn written_kits_are_safe_and_load() {
        let root = tempfile::tempdir().unwrap();
        let kits = root.path().join("kits");
        write_kit(&kits, "gen/app", "quick_check_interval = \"1s\"\n").unwrap();
        write_kit(
            &kits,
            "gen/appmon",
            text("gen/appmon/manifest.toml").unwrap(),
        )
        .unwrap();
        assert!(write_kit(&kits, "gen/nope", "").is_err());
        let loaded = crate::resources::kit::Kits::load(&[kits]).unwrap();
        for kit in ["app", "appmon"] {
            let kit = loaded.get("gen", kit).unwrap();
            assert_eq!(kit.problems(), Vec::<String>::new());
        }
    }
}
