// A migration added to `migrations/` rebuilds the crate (the `sqlx::migrate!` macro reads
// the directory at compile time but does not tell cargo about files added to it).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
