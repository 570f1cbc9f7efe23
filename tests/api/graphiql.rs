//! The explorer page a browser gets at `/graphql`, with every asset served locally.

use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

async fn a_browser_gets_graphiql_whose_assets_are_all_served_by_the_server(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .get(app.graphql_url())
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert!(response.headers().contains_key("content-security-policy"));
    let page = response.text().await.expect("HTML");

    let mut assets = 0;
    for attribute in ["src=\"", "href=\""] {
        for link in page
            .split(attribute)
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
        {
            if link.starts_with("data:") {
                continue;
            }
            assert!(
                link.starts_with('/'),
                "{link} is served by this server, not another host"
            );
            let asset = app
                .client
                .get(format!("{}{link}", app.address))
                .send()
                .await
                .expect("answer");
            assert_eq!(asset.status(), 200, "{link}");
            assets += 1;
        }
    }
    assert!(
        assets >= 4,
        "GraphiQL, React, ReactDOM and the styles: found {assets}"
    );
}

on_both_backends!(a_browser_gets_graphiql_whose_assets_are_all_served_by_the_server);
