//! Lists each backend's migrations for `src/db/migrations.rs`, which embeds
//! them: sqlx's `migrate!` macro would build sqlx's database drivers a
//! second time, for the compiler, on every cold build.

use std::fmt::Write;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let mut code = String::new();
    for backend in ["sqlite", "postgres"] {
        let directory = Path::new("migrations").join(backend);
        let mut files: Vec<_> = std::fs::read_dir(&directory)
            .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "sql"))
            .collect();
        files.sort();
        writeln!(
            code,
            "pub const {}: &[MigrationFile] = &[",
            backend.to_uppercase()
        )
        .unwrap();
        for path in files {
            let stem = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .expect("a UTF-8 name");
            let (version, description) = stem.split_once('_').unwrap_or_else(|| {
                panic!("{} must be named VERSION_DESCRIPTION.sql", path.display())
            });
            let version: i64 = version
                .parse()
                .unwrap_or_else(|_| panic!("{} must start with a numeric version", path.display()));
            let absolute = std::fs::canonicalize(&path).expect("an existing file");
            writeln!(
                code,
                "    MigrationFile {{ version: {version}, description: {:?}, sql: include_str!({:?}) }},",
                description.replace('_', " "),
                absolute.display().to_string(),
            )
            .unwrap();
        }
        code.push_str("];\n");
    }
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out).join("migrations.rs"), code).expect("OUT_DIR is writable");
}
