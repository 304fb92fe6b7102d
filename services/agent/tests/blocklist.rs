//! Blocklist: parsing, matching (including IPv4-mapped IPv6), errors naming the
//! line, a 100k-entry list against a brute-force check, and hot reload after an
//! in-place rewrite, a rename over the file, a Kubernetes `..data` symlink swap,
//! a bad new version and a deleted file.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use throng_agent::blocklist::{Blocklist, BlocklistError, BlocklistHandle};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn parses_addresses_ranges_comments_and_blank_lines() {
    let list = Blocklist::parse(
        "# scanners\n\
         \n\
         192.0.2.1\n\
         \t198.51.100.0/24   # a whole network\n\
         2001:db8:bad::/48\n\
         2001:db8::7\n\
         10.1.2.3/8\n",
    )
    .unwrap();
    assert_eq!(list.len(), 5);
    for blocked in [
        "192.0.2.1",
        "198.51.100.0",
        "198.51.100.255",
        "2001:db8:bad::1",
        "2001:db8:bad:ffff:ffff:ffff:ffff:ffff",
        "2001:db8::7",
        "10.0.0.0",
        "10.255.255.255",
    ] {
        assert!(list.contains(ip(blocked)), "{blocked} should be blocked");
    }
    for allowed in [
        "192.0.2.0",
        "192.0.2.2",
        "198.51.101.0",
        "198.51.99.255",
        "2001:db8:bae::",
        "2001:db8::8",
        "11.0.0.0",
        "9.255.255.255",
    ] {
        assert!(!list.contains(ip(allowed)), "{allowed} should pass");
    }
}

#[test]
fn tolerates_a_byte_order_mark_and_crlf_line_ends() {
    let list = Blocklist::parse("\u{feff}192.0.2.1\r\n# note\r\n192.0.2.8/29\r\n").unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.contains(ip("192.0.2.1")) && list.contains(ip("192.0.2.15")));
}

#[test]
fn ipv4_mapped_ipv6_matches_ipv4_entries_both_ways() {
    let list =
        Blocklist::parse("192.0.2.1\n::ffff:198.51.100.0/120\n::ffff:203.0.113.9\n").unwrap();
    assert!(list.contains(ip("::ffff:192.0.2.1")));
    assert!(list.contains(ip("198.51.100.77")));
    assert!(list.contains(ip("::ffff:198.51.100.77")));
    assert!(list.contains(ip("203.0.113.9")));
    assert!(!list.contains(ip("198.51.101.1")));

    let v6_only = Blocklist::parse("::/0").unwrap();
    assert!(v6_only.contains(ip("2001:db8::1")));
    assert!(
        !v6_only.contains(ip("192.0.2.1")),
        "::/0 does not cover IPv4 clients"
    );
    assert!(!v6_only.contains(ip("::ffff:192.0.2.1")));
}

#[test]
fn bad_lines_are_errors_naming_the_line() {
    for (text, line) in [
        ("192.0.2.1\nnot-an-ip\n", 2),
        ("# c\n\n192.0.2.0/33\n", 3),
        ("2001:db8::/129", 1),
        ("192.0.2.0/", 1),
        ("192.0.2.0/x", 1),
        ("192.0.2.1 192.0.2.2", 1),
    ] {
        let err = Blocklist::parse(text).unwrap_err();
        assert_eq!(err.line, line, "{text:?}: {err}");
        assert!(
            err.to_string().starts_with(&format!("line {line}:")),
            "{err}"
        );
    }
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let err = Blocklist::load(&missing).unwrap_err();
    assert!(matches!(err, BlocklistError::Read { .. }));
    assert!(err.to_string().contains("missing.txt"), "{err}");

    let bad = dir.path().join("bad.txt");
    fs::write(&bad, "192.0.2.1\n\n300.1.1.1\n").unwrap();
    let err = Blocklist::load(&bad).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("bad.txt") && text.contains("line 3"),
        "{text}"
    );
    assert!(BlocklistHandle::watch(&bad, Duration::from_secs(2)).is_err());
}

#[test]
fn a_100k_entry_list_agrees_with_brute_force() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut v4: Vec<(u32, u8)> = Vec::new();
    let mut v6: Vec<(u128, u8)> = Vec::new();
    let mut text = String::new();
    for _ in 0..90_000 {
        let addr: u32 = rng.random();
        let prefix = [32, 32, 32, 28, 24, 20, 16][rng.random_range(0..7)];
        v4.push((addr, prefix));
        text.push_str(&format!("{}/{prefix}\n", Ipv4Addr::from(addr)));
    }
    for _ in 0..10_000 {
        let addr: u128 = (0x2001_0db8u128 << 96) | u128::from(rng.random::<u64>()) << 32;
        let prefix = [128, 64, 56, 48][rng.random_range(0..4)];
        v6.push((addr, prefix));
        text.push_str(&format!("{}/{prefix}\n", Ipv6Addr::from(addr)));
    }
    let list = Blocklist::parse(&text).unwrap();
    assert_eq!(list.len(), 100_000);

    let in_v4 = |x: u32| {
        v4.iter()
            .any(|&(a, p)| (a ^ x).checked_shr(32 - u32::from(p)).unwrap_or(0) == 0)
    };
    let in_v6 = |x: u128| {
        v6.iter()
            .any(|&(a, p)| (a ^ x).checked_shr(128 - u32::from(p)).unwrap_or(0) == 0)
    };
    let mut hits = 0;
    for i in 0..1_000 {
        // Half the probes land next to a listed entry, where mistakes would be.
        let x: u32 = if i % 2 == 0 {
            v4[rng.random_range(0..v4.len())]
                .0
                .wrapping_add(rng.random_range(0..512))
        } else {
            rng.random()
        };
        let expected = in_v4(x);
        hits += usize::from(expected);
        assert_eq!(
            list.contains(IpAddr::V4(x.into())),
            expected,
            "{}",
            Ipv4Addr::from(x)
        );
        let y: u128 = v6[rng.random_range(0..v6.len())].0 ^ u128::from(rng.random::<u64>() >> 4);
        assert_eq!(
            list.contains(IpAddr::V6(y.into())),
            in_v6(y),
            "{}",
            Ipv6Addr::from(y)
        );
    }
    assert!(hits > 300, "probes should hit often, got {hits}");

    let probes: Vec<IpAddr> = (0..100_000)
        .map(|_| IpAddr::V4(rng.random::<u32>().into()))
        .collect();
    let started = Instant::now();
    let blocked = probes.iter().filter(|&&p| list.contains(p)).count();
    let per_lookup = started.elapsed() / 100_000;
    eprintln!("100k-entry lookup: {per_lookup:?} each (debug build), {blocked} blocked");
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[test]
fn reloads_on_in_place_rewrite_and_on_rename() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocklist.txt");
    fs::write(&path, "192.0.2.1\n").unwrap();
    let handle = BlocklistHandle::load(&path).unwrap();
    assert!(!handle.check().unwrap());
    assert!(handle.contains(ip("192.0.2.1")));

    fs::write(&path, "192.0.2.2\n192.0.2.3\n").unwrap();
    assert!(handle.check().unwrap());
    assert!(!handle.contains(ip("192.0.2.1")));
    assert!(handle.contains(ip("192.0.2.3")));
    assert_eq!((handle.len(), handle.reloads()), (2, 1));
    assert!(!handle.check().unwrap());

    write_atomically(&path, "192.0.2.4\n192.0.2.5\n");
    assert!(handle.check().unwrap());
    assert!(handle.contains(ip("192.0.2.5")));
    assert_eq!(handle.reloads(), 2);
    assert_eq!(handle.reload_failures(), 0);
}

/// Lays out a directory the way the kubelet projects a ConfigMap:
/// `blocklist.txt -> ..data/blocklist.txt`, `..data -> ..<version>`.
fn project_configmap(dir: &Path, version: &str, text: &str) {
    let versioned = dir.join(version);
    fs::create_dir(&versioned).unwrap();
    fs::write(versioned.join("blocklist.txt"), text).unwrap();
    let tmp_link = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp_link).unwrap();
    fs::rename(&tmp_link, dir.join("..data")).unwrap();
    let top = dir.join("blocklist.txt");
    if fs::symlink_metadata(&top).is_err() {
        std::os::unix::fs::symlink("..data/blocklist.txt", &top).unwrap();
    }
}

#[test]
fn reloads_on_configmap_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    project_configmap(dir.path(), "..2025_01_01_00_00_00.1", "192.0.2.1\n");
    let handle = BlocklistHandle::load(dir.path().join("blocklist.txt")).unwrap();
    assert!(handle.contains(ip("192.0.2.1")));

    // Same size, same mtime: only the symlink target tells the versions apart.
    project_configmap(dir.path(), "..2025_01_01_00_00_00.2", "192.0.2.9\n");
    let old = dir.path().join("..2025_01_01_00_00_00.1/blocklist.txt");
    let new = dir.path().join("..2025_01_01_00_00_00.2/blocklist.txt");
    let mtime = fs::metadata(&old).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(&new)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    assert!(handle.check().unwrap());
    assert!(!handle.contains(ip("192.0.2.1")));
    assert!(handle.contains(ip("192.0.2.9")));
}

#[test]
fn a_bad_or_missing_new_version_keeps_the_previous_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocklist.txt");
    fs::write(&path, "192.0.2.1\n").unwrap();
    let handle = BlocklistHandle::load(&path).unwrap();

    write_atomically(&path, "192.0.2.2\n192.0.2.300\n");
    let err = handle.check().unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(handle.contains(ip("192.0.2.1")));
    assert_eq!(handle.reload_failures(), 1);
    assert!(handle.last_error().unwrap().contains("line 2"));
    assert!(!handle.check().unwrap(), "a bad version is reported once");

    fs::remove_file(&path).unwrap();
    assert!(matches!(handle.check(), Err(BlocklistError::Read { .. })));
    assert!(!handle.check().unwrap());
    assert!(handle.contains(ip("192.0.2.1")));
    assert_eq!(handle.reload_failures(), 2);

    write_atomically(&path, "192.0.2.3\n");
    assert!(handle.check().unwrap());
    assert!(handle.contains(ip("192.0.2.3")));
    assert!(!handle.contains(ip("192.0.2.1")));
    assert_eq!(handle.last_error(), None);
    assert_eq!(handle.reloads(), 1);
}

#[tokio::test]
async fn the_watch_task_follows_the_file_and_ends_with_the_last_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocklist.txt");
    fs::write(&path, "192.0.2.1\n").unwrap();
    let (handle, task) = BlocklistHandle::watch(&path, Duration::from_millis(20)).unwrap();
    let reader = handle.clone();
    assert!(reader.contains(ip("192.0.2.1")));

    write_atomically(&path, "2001:db8::/32\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.contains(ip("2001:db8::1")) {
        assert!(Instant::now() < deadline, "reload not seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!reader.contains(ip("192.0.2.1")));

    drop(handle);
    drop(reader);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("watch task ends once no handle is left")
        .unwrap();
}

#[test]
fn a_handle_without_a_file_is_a_fixed_list() {
    let handle = BlocklistHandle::default();
    assert!(handle.is_empty());
    assert!(!handle.check().unwrap());
    handle.replace(Blocklist::parse("192.0.2.0/24").unwrap());
    assert!(handle.contains(ip("192.0.2.200")));
    assert_eq!(handle.current().len(), 1);
}
