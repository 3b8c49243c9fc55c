//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds
//! the migration folders, and cargo does not watch a folder for new files.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
