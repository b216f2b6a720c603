//! Tenants added while the server runs (`orderly tenant add` appends to the tenants file) are
//! known at the next request: in quick succession, and even when the file's modification time
//! did not move (coarse file-system clocks give two appends in one tick the same time).

use std::fs::File;

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
