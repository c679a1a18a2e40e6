//! The served OpenAPI document is valid OpenAPI 3.1, checked by a real
//! validator (openapi-spec-validator, which validates against the official
//! 3.1 schema), not by our own reading of the specification.

use std::process::Stdio;

use serde_json::Value;

use crate::support::{Receiver, TestApp, webhook_config};

/// The Python the test suite uses (scripts/test installs the validator into
/// target/test-venv and points LEADRELAY_TEST_PYTHON at it).
fn python_with_validator() -> String {
    let python = std::env::var("LEADRELAY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import openapi_spec_validator"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs openapi-spec-validator: {python} cannot import it. Run scripts/test \
         (it installs it into target/test-venv and sets LEADRELAY_TEST_PYTHON), or point \
         LEADRELAY_TEST_PYTHON at a Python that has it."
    );
    python
}

#[tokio::test]
async fn served_document_is_valid_openapi_3_1() {
    let python = python_with_validator();
    let r = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(&r.url(), "")).await;
    let resp = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "openapi_spec_validator",
            "--schema",
            "3.1",
            "--validation-errors",
            "all",
        ])
        .arg(&path)
        .output()
        .expect("run openapi-spec-validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the served document is invalid:\n{text}"
    );
    assert!(text.contains("OK"), "{text}");
}
