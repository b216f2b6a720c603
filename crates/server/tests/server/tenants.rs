//! Tenants added while the server runs (`orderly tenant add` appends to the tenants file) are
//! known at the next request: in quick succession, and even when the file's modification time
//! did not move (coarse file-system clocks give two appends in one tick the same time). A line
//! a crash left unfinished is no tenant and is cut off by the next add; adds of one name at
//! once give it one token.

use std::fs::File;
use std::io::Write;

use axum::http::StatusCode;
use orderly_server::tenants::{self, TENANTS_FILE, Tenants};

use super::support::{self, Server};

#[tokio::test]
async fn tenants_added_in_quick_succession_are_all_known() {
    let server = Server::start();
    for n in 0..20 {
        let token = server.add_tenant(&format!("t-{n}"));
        let reply = server.call(support::get("/v1/orders?customer_id=c-1", Some(&token))).await;
        assert_eq!(reply.status, StatusCode::OK, "tenant t-{n}: {}", reply.text);
    }
}

#[test]
fn a_tenant_added_within_the_same_clock_tick_is_known() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let first = tenants::add(dir.path(), &support::tenant("first")).expect("added");
    let path = dir.path().join(TENANTS_FILE);
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).expect("a time");
    let known = Tenants::open(dir.path()).expect("the tenants");
    assert_eq!(known.authenticate(&first), Some(support::tenant("first")));

    let second = tenants::add(dir.path(), &support::tenant("second")).expect("added");
    // As if the append had landed in the same tick as the file's previous change.
    File::options().append(true).open(&path).and_then(|f| f.set_modified(modified)).expect("set");
    assert_eq!(known.authenticate(&second), Some(support::tenant("second")));
}

#[test]
fn a_line_an_interrupted_add_left_unfinished_is_no_tenant_and_the_next_add_cuts_it_off() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let first = tenants::add(dir.path(), &support::tenant("first")).expect("added");
    let path = dir.path().join(TENANTS_FILE);
    // A crash in the middle of an add's write: half a line, no newline, its token never shown.
    let cut_short = format!("tenant cut {}", &blake3::hash(b"never shown").to_hex()[..20]);
    File::options()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(cut_short.as_bytes()))
        .expect("appended");

    let known = Tenants::open(dir.path()).expect("a file with an unfinished line still opens");
    assert_eq!(known.names(), vec![support::tenant("first")]);
    assert_eq!(known.authenticate(&first), Some(support::tenant("first")));

    let second = tenants::add(dir.path(), &support::tenant("second")).expect("added");
    let text = std::fs::read_to_string(&path).expect("the file");
    assert!(!text.contains("tenant cut"), "the unfinished line is cut off: {text:?}");
    assert_eq!(text.lines().count(), 2, "{text:?}");
    assert!(text.ends_with('\n'));
    let known = Tenants::open(dir.path()).expect("the tenants");
    assert_eq!(known.names(), vec![support::tenant("first"), support::tenant("second")]);
    assert_eq!(known.authenticate(&second), Some(support::tenant("second")));
}

#[test]
fn adds_of_one_name_at_once_give_it_one_token() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for round in 0..20 {
        let name = support::tenant(&format!("racer-{round}"));
        let added = std::thread::scope(|scope| {
            let adds: Vec<_> =
                (0..4).map(|_| scope.spawn(|| tenants::add(dir.path(), &name))).collect();
            adds.into_iter().map(|add| add.join().expect("no panic")).filter(Result::is_ok).count()
        });
        assert_eq!(added, 1, "round {round}: {added} adds of {name} succeeded");
    }
    let text = std::fs::read_to_string(dir.path().join(TENANTS_FILE)).expect("the file");
    assert_eq!(text.lines().count(), 20, "{text}");
}
