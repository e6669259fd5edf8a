//! The Debian package (issue 15): `packaging/deb.sh dev` builds it with
//! cargo-deb from this build's binary; it is installed with `dpkg -i` into
//! a clean root (a copy-on-write copy of this machine's, in a mount
//! namespace of its own, so the machine itself is untouched), where the
//! test checks the `heartline` group, the example configuration, the
//! systemd unit (`systemd-analyze verify`), the manual pages, completions
//! and kits, starts the daemon from `/usr/bin` with its default
//! configuration path and asks its status over the default socket, then
//! removes (the configuration stays) and purges the package. Without root,
//! cargo-deb, dpkg or overlayfs it says it was skipped.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::path::Path;
use std::process::Command;

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_debian_package_installs_in_a_clean_root_and_its_daemon_runs() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: the Debian package test needs root (dpkg in a mount namespace)");
        return;
    }
    for program in ["cargo-deb", "dpkg", "unshare", "chroot"] {
        if !have(program) {
            eprintln!(
                "SKIPPED: the Debian package test: {program} is not installed (cargo install cargo-deb --locked; apt install dpkg util-linux coreutils)"
            );
            return;
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("heartline.deb");
    let built = Command::new(root.join("packaging/deb.sh"))
        .arg("dev")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        built.status.success() && deb.is_file(),
        "packaging/deb.sh dev failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let contents = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let contents = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/bin/heartline",
        "./usr/lib/systemd/system/heartline.service",
        "./etc/heartline/heartline.toml",
        "./usr/share/heartline/kits/gen/app/actions/restore",
        "./usr/share/heartline/kits/gen/appmon/common.sh",
        "./usr/share/man/man1/heartline.1.gz",
        "./usr/share/man/man1/heartline-switchover.1.gz",
        "./usr/share/bash-completion/completions/heartline",
        "./usr/share/zsh/vendor-completions/_heartline",
        "./usr/share/fish/vendor_completions.d/heartline.fish",
        "./usr/share/doc/heartline/copyright",
        "./usr/share/doc/heartline/admin.md",
    ] {
        assert!(
            contents.contains(path),
            "{path} is not in the package:\n{contents}"
        );
    }

    let script = |name: &str| root.join("host/tests/package").join(name);
    let out = Command::new("unshare")
        .args(["--mount", "--fork", "bash"])
        .arg(script("clean-root.sh"))
        .arg(&deb)
        .arg(script("in-root.sh"))
        .arg(
            root.join("host/heartline.example.toml")
                .canonicalize()
                .unwrap(),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unknown filesystem type 'overlay'")
        || stderr.contains("mount: ") && !out.status.success() && !stdout.contains("GROUP")
    {
        eprintln!("SKIPPED: the Debian package test: cannot make a clean root here: {stderr}");
        return;
    }
    let all = format!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the clean-root install failed:\n{all}"
    );
    for line in [
        "GROUP heartline",
        "CONFIG example",
        "CONFMODE 640 root heartline",
        "ExecStart=/usr/bin/heartline daemon --config /etc/heartline/heartline.toml",
        "UNIT verified",
        "MAN /usr/share/man/man1/heartline-status.1.gz",
        "/etc/heartline/heartline.toml: ok: cluster packaged (id 9), node 1 (alpha)",
        "cluster packaged  node 1 (alpha)",
        "SOCKET heartline",
        "REMOVED config kept",
        "PURGED",
    ] {
        assert!(all.contains(line), "`{line}` missing:\n{all}");
    }
    // The machine itself was not touched.
    let here = Command::new("dpkg")
        .args(["-s", "heartline"])
        .output()
        .unwrap();
    let installed_here = here.status.success();
    eprintln!(
        "the package: {} bytes; installed, run and purged in a clean root (installed on this machine itself: {installed_here})",
        std::fs::metadata(&deb).unwrap().len()
    );
}
