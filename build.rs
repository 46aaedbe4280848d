// The migrations are embedded by `sqlx::migrate!`; a new or changed migration file must rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
