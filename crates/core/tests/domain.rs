//! The domain's behaviour, written down as given/when/then scenarios for every command and
//! rejection of each aggregate, and as properties that random command sequences must keep.
//!
//! One binary for the whole domain (see `../shared/style.md`, "tests as documentation"); each
//! module below opens with what it proves.

mod domain {
    mod fixtures;
    mod harness;

    mod inventory;
    mod order;
    mod payment;
    mod properties;
    mod tenant;
    mod types;
}
