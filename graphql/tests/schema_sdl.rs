//! The exported SDL must match the schema the server serves.

#[test]
fn exported_schema_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let exported = std::fs::read_to_string(path).unwrap_or_default();
    let current = kabinet_graphql::schema::sdl();
    assert!(
        exported == current,
        "graphql/schema.graphql is stale: run `cargo run -p kabinet-graphql --bin kabinet -- schema --output graphql/schema.graphql`"
    );
}
