//! Publishing flow declarations: who may, what a declaration must be, how
//! versions are counted, and reading them back with `flow` and `flows`.

use serde_json::{Value, json};

use super::{
    FLOW, Who, assert_datetime, assert_error, declaration, gql, ok, publish, publish_ok,
    publish_with, published_keys, read_flow, send, steps,
};
use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

/// A declaration whose step titles are `title_length` characters long.
fn with_titles(key: &str, count: usize, title_length: usize) -> Value {
    let steps: Vec<Value> = (0..count)
        .map(|i| json!({ "key": format!("s{i}"), "title": "t".repeat(title_length) }))
        .collect();
    json!({ "key": key, "title": "Long", "steps": steps })
}

/// Publishing `input` is refused with BAD_USER_INPUT naming `mentions`, and
/// nothing is published.
async fn assert_refused(app: &crate::helpers::TestApp, input: Value, mentions: &[&str]) {
    let body = publish(app, input.clone()).await;
    assert_error(&body, "BAD_USER_INPUT", mentions);
    assert_eq!(
        published_keys(app).await,
        Vec::<String>::new(),
        "nothing is published for {input}"
    );
}

async fn the_first_publish_is_version_1_and_returns_the_flow(backend: Backend) {
    let app = spawn_app(backend).await;

    let flow = publish_ok(
        &app,
        json!({
            "key": "checklist",
            "title": "Setup checklist",
            "steps": [
                { "key": "profile", "title": "Fill in your profile" },
                { "key": "invite", "title": "Invite a teammate", "optional": true },
            ],
        }),
    )
    .await;

    let expected_steps = json!([
        { "key": "profile", "title": "Fill in your profile", "optional": false },
        { "key": "invite", "title": "Invite a teammate", "optional": true },
    ]);
    assert_eq!(flow["key"], "checklist");
    assert_eq!(flow["title"], "Setup checklist");
    assert_eq!(flow["version"], 1);
    assert_eq!(flow["steps"], expected_steps);
    assert_datetime(&flow["publishedAt"]);
    let versions = flow["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "{flow}");
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["title"], "Setup checklist");
    assert_eq!(versions[0]["steps"], expected_steps);
    assert_eq!(versions[0]["reonboarding"], "KEEP", "KEEP is the default");
    assert_eq!(versions[0]["publishedAt"], flow["publishedAt"]);
    assert_eq!(read_flow(&app, Who::Admin, "checklist").await, flow);
}

async fn publishing_the_same_declaration_again_makes_no_new_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = publish_ok(&app, declaration("checklist", &["profile", "invite"])).await;

    let again = publish_ok(&app, declaration("checklist", &["profile", "invite"])).await;

    assert_eq!(again["version"], 1);
    assert_eq!(again["publishedAt"], first["publishedAt"]);
    assert_eq!(again["versions"].as_array().expect("versions").len(), 1);
    assert_eq!(read_flow(&app, Who::Admin, "checklist").await["version"], 1);
}

async fn each_change_of_title_steps_step_title_or_optional_flag_makes_the_next_version(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let step = |key: &str, title: &str, optional: bool| json!({ "key": key, "title": title, "optional": optional });
    let declarations = [
        (
            "Tour",
            json!([step("a", "A", false), step("b", "B", false)]),
        ),
        (
            "Tour, renamed",
            json!([step("a", "A", false), step("b", "B", false)]),
        ),
        (
            "Tour, renamed",
            json!([
                step("a", "A", false),
                step("b", "B", false),
                step("c", "C", false)
            ]),
        ),
        (
            "Tour, renamed",
            json!([
                step("a", "A again", false),
                step("b", "B", false),
                step("c", "C", false)
            ]),
        ),
        (
            "Tour, renamed",
            json!([
                step("a", "A again", false),
                step("b", "B", true),
                step("c", "C", false)
            ]),
        ),
    ];

    for (index, (title, steps)) in declarations.iter().enumerate() {
        let input = json!({ "key": "tour", "title": title, "steps": steps });
        let flow = publish_ok(&app, input).await;
        assert_eq!(flow["version"], index + 1, "{title} {steps}");
        assert_eq!(flow["title"], *title);
        assert_eq!(flow["steps"], *steps);
    }
    let (title, last) = &declarations[4];
    let unchanged = publish_ok(
        &app,
        json!({ "key": "tour", "title": title, "steps": last }),
    )
    .await;
    assert_eq!(
        unchanged["version"], 5,
        "the same content again is no new version"
    );

    let flow = read_flow(&app, Who::Admin, "tour").await;
    assert_eq!(flow["version"], 5);
    let versions = flow["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 5, "{flow}");
    for (index, (version, (title, steps))) in versions.iter().zip(&declarations).enumerate() {
        assert_eq!(version["version"], index + 1, "oldest first: {flow}");
        assert_eq!(version["title"], *title);
        assert_eq!(version["steps"], *steps, "each version keeps its own steps");
        assert_datetime(&version["publishedAt"]);
    }
}

async fn flow_versions_keep_each_versions_steps_and_reonboarding_policy(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_with(&app, "whats-new", &["search"], "KEEP").await;
    publish_with(&app, "whats-new", &["search", "export"], "NEW_STEPS_ONLY").await;
    publish_with(&app, "whats-new", &["export"], "RESTART_ALL").await;
    let latest = publish_with(
        &app,
        "whats-new",
        &["export", "import"],
        "RESTART_IN_PROGRESS",
    )
    .await;

    assert_eq!(latest["version"], 4);
    assert_eq!(
        latest["steps"],
        json!([
            { "key": "export", "title": "Step export", "optional": false },
            { "key": "import", "title": "Step import", "optional": false },
        ])
    );
    let versions = latest["versions"].as_array().expect("versions");
    let summary: Vec<(i64, Vec<String>, String)> = versions
        .iter()
        .map(|version| {
            (
                version["version"].as_i64().expect("a version"),
                super::step_keys(version),
                version["reonboarding"]
                    .as_str()
                    .expect("a policy")
                    .to_owned(),
            )
        })
        .collect();
    let expected = [
        (1_i64, vec!["search"], "KEEP"),
        (2_i64, vec!["search", "export"], "NEW_STEPS_ONLY"),
        (3_i64, vec!["export"], "RESTART_ALL"),
        (4_i64, vec!["export", "import"], "RESTART_IN_PROGRESS"),
    ]
    .map(|(version, keys, policy)| {
        (
            version,
            keys.into_iter().map(str::to_owned).collect::<Vec<_>>(),
            policy.to_owned(),
        )
    });
    assert_eq!(summary, expected);
    let published: Vec<&str> = versions
        .iter()
        .map(|version| version["publishedAt"].as_str().expect("publishedAt"))
        .collect();
    assert!(
        published.windows(2).all(|pair| pair[0] <= pair[1]),
        "oldest first: {published:?}"
    );
}

async fn flow_is_null_for_an_unknown_key(backend: Backend) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("checklist", &["profile"])).await;

    assert_eq!(
        read_flow(&app, Who::Admin, "no-such-flow").await,
        Value::Null
    );
    assert_eq!(
        read_flow(&app, Who::User("alice"), "no-such-flow").await,
        Value::Null
    );
}

async fn flows_lists_every_published_flow_sorted_by_key(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(published_keys(&app).await, Vec::<String>::new());
    for key in ["zeta", "alpha", "mid-way"] {
        publish_ok(&app, declaration(key, &["one", "two"])).await;
    }
    publish_ok(&app, declaration("alpha", &["one", "two", "three"])).await;

    assert_eq!(published_keys(&app).await, ["alpha", "mid-way", "zeta"]);

    let query = format!("{{ flows {{ {FLOW} }} }}");
    let flows = ok(gql(&app, Who::Admin, &query, json!({})).await, "flows");
    let alpha = flows
        .as_array()
        .expect("a list")
        .iter()
        .find(|flow| flow["key"] == "alpha")
        .expect("alpha");
    assert_eq!(alpha["version"], 2, "flows shows the latest version");
    assert_eq!(super::step_keys(alpha), ["one", "two", "three"]);
}

async fn a_signed_in_user_reads_flows_but_an_anonymous_request_is_unauthenticated(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    publish_ok(&app, declaration("checklist", &["profile"])).await;

    let query = "{ flows { key version } }";
    let body = ok(
        gql(&app, Who::User("alice"), query, json!({})).await,
        "flows",
    );
    assert!(
        body.as_array()
            .expect("a list")
            .iter()
            .any(|flow| flow["key"] == "checklist"),
        "{body}"
    );
    assert_eq!(
        read_flow(&app, Who::User("alice"), "checklist").await["version"],
        1
    );

    let body = gql(&app, Who::Nobody, query, json!({})).await;
    assert_error(&body, "UNAUTHENTICATED", &[]);
    let body = gql(
        &app,
        Who::Nobody,
        "query($key: String!) { flow(key: $key) { key } }",
        json!({ "key": "checklist" }),
    )
    .await;
    assert_error(&body, "UNAUTHENTICATED", &[]);
}

async fn publish_flow_is_for_admins_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let query = format!(
        "mutation($input: PublishFlowInput!) {{ publishFlow(input: $input) {{ {FLOW} }} }}"
    );
    let variables = json!({ "input": declaration("checklist", &["profile"]) });

    let body = gql(&app, Who::User("alice"), &query, variables.clone()).await;
    assert_error(&body, "FORBIDDEN", &[]);
    let body = gql(&app, Who::Nobody, &query, variables).await;
    assert_error(&body, "UNAUTHENTICATED", &[]);

    assert_eq!(read_flow(&app, Who::Admin, "checklist").await, Value::Null);
    assert_eq!(published_keys(&app).await, Vec::<String>::new());
}

async fn a_declaration_needs_at_least_one_step(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_refused(&app, declaration("empty", &[]), &["step"]).await;
}

async fn a_declaration_has_at_most_100_steps(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys: Vec<String> = (0..101).map(|i| format!("step-{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();

    assert_refused(&app, declaration("long", &keys), &["100"]).await;

    let flow = publish_ok(&app, declaration("long", &keys[..100])).await;
    assert_eq!(flow["steps"].as_array().expect("steps").len(), 100);
}

async fn duplicate_step_keys_are_refused_naming_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let input = declaration("checklist", &["profile", "twice", "invite", "twice"]);
    assert_refused(&app, input, &["twice"]).await;
}

async fn malformed_flow_and_step_keys_are_refused_naming_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let too_long = format!("a{}", "b".repeat(64));
    for key in [
        "Checklist",
        "-leading-dash",
        "_leading",
        "with space",
        "dot.ted",
        "ümlaut",
        too_long.as_str(),
    ] {
        assert_refused(&app, declaration(key, &["profile"]), &[key]).await;
    }
    for key in ["Profile", "-step", "step!", "two words", too_long.as_str()] {
        assert_refused(&app, declaration("checklist", &["fine", key]), &[key]).await;
    }
    let body = publish(&app, declaration("", &["profile"])).await;
    assert_error(&body, "BAD_USER_INPUT", &[]);
    let body = publish(&app, declaration("checklist", &[""])).await;
    assert_error(&body, "BAD_USER_INPUT", &[]);
    assert_eq!(published_keys(&app).await, Vec::<String>::new());

    let longest = format!("a{}", "-".repeat(63));
    let flow = publish_ok(&app, declaration(&longest, &["0", "9_a-b", &longest])).await;
    assert_eq!(
        flow["key"],
        longest.as_str(),
        "64 characters is the longest key"
    );
}

async fn an_empty_flow_or_step_title_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_refused(
        &app,
        json!({ "key": "checklist", "title": "", "steps": steps(&["profile"]) }),
        &["title"],
    )
    .await;
    assert_refused(
        &app,
        json!({
            "key": "checklist",
            "title": "Checklist",
            "steps": [{ "key": "profile", "title": "" }],
        }),
        &["title"],
    )
    .await;
}

async fn a_declaration_over_64_kib_is_refused_and_nothing_is_published(backend: Backend) {
    let app = spawn_app(backend).await;
    // 100 steps of 700-character titles: about 72 KiB of JSON.
    let input = with_titles("huge", 100, 700);
    assert!(serde_json::to_string(&input).expect("JSON").len() > 64 * 1024);
    let query = format!(
        "mutation($input: PublishFlowInput!) {{ publishFlow(input: $input) {{ {FLOW} }} }}"
    );

    let response = send(&app, Who::Admin, &query, json!({ "input": input })).await;

    // The declaration cannot be sent in a request body of 64 KiB or less, so
    // the HTTP layer's 413 may answer before the declaration is looked at.
    let status = response.status().as_u16();
    if status != 413 {
        assert_eq!(status, 200);
        let body: Value = response.json().await.expect("JSON");
        assert_error(&body, "BAD_USER_INPUT", &[]);
    }
    assert_eq!(read_flow(&app, Who::Admin, "huge").await, Value::Null);
}

async fn publishing_onboarding_is_allowed_and_gives_it_step_keys(backend: Backend) {
    let app = spawn_app(backend).await;

    let flow = publish_ok(
        &app,
        declaration("onboarding", &["welcome", "profile", "done"]),
    )
    .await;

    assert_eq!(flow["key"], "onboarding");
    assert_eq!(flow["version"], 1);
    assert_eq!(super::step_keys(&flow), ["welcome", "profile", "done"]);
    assert!(
        super::flow_states_of(&app, "alice")
            .await
            .iter()
            .any(|state| state["flow"] == "onboarding" && state["totalSteps"] == 3)
    );
}

on_both_backends!(
    the_first_publish_is_version_1_and_returns_the_flow,
    publishing_the_same_declaration_again_makes_no_new_version,
    each_change_of_title_steps_step_title_or_optional_flag_makes_the_next_version,
    flow_versions_keep_each_versions_steps_and_reonboarding_policy,
    flow_is_null_for_an_unknown_key,
    flows_lists_every_published_flow_sorted_by_key,
    a_signed_in_user_reads_flows_but_an_anonymous_request_is_unauthenticated,
    publish_flow_is_for_admins_only,
    a_declaration_needs_at_least_one_step,
    a_declaration_has_at_most_100_steps,
    duplicate_step_keys_are_refused_naming_the_key,
    malformed_flow_and_step_keys_are_refused_naming_the_key,
    an_empty_flow_or_step_title_is_refused,
    a_declaration_over_64_kib_is_refused_and_nothing_is_published,
    publishing_onboarding_is_allowed_and_gives_it_step_keys,
);
