//! The GraphiQL explorer for browsers, self-hosted: every script, style and font is embedded
//! in the binary, so it works with no internet access. `graphiql/refresh-assets.sh` updates
//! the vendored files.

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tower_http::compression::CompressionLayer;

/// The vendored versions, e.g. `graphiql-4.0.3-react-18.3.1-graphql-ws-6.4.2`. Part of every vendored
/// asset's URL, so browsers may cache those forever.
const ASSETS_VERSION: &str = include_str!("graphiql/assets/VERSION").trim_ascii();

/// GraphiQL's fonts and icons are data: URIs, and its dialogs add `<style>` elements
/// (react-remove-scroll), hence `data:` and `'unsafe-inline'`; every other load is ours.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

static VENDORED: [Asset; 9] = [
    Asset {
        name: "graphiql.min.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("graphiql/assets/graphiql.min.js"),
    },
    Asset {
        name: "graphiql.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("graphiql/assets/graphiql.min.css"),
    },
    Asset {
        name: "react.production.min.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("graphiql/assets/react.production.min.js"),
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("graphiql/assets/react-dom.production.min.js"),
    },
    Asset {
        name: "graphql-ws.min.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("graphiql/assets/graphql-ws.min.js"),
    },
    Asset {
        name: "LICENSE-graphql-ws",
        content_type: TEXT,
        body: include_bytes!("graphiql/assets/LICENSE-graphql-ws"),
    },
    Asset {
        name: "LICENSE-graphiql",
        content_type: TEXT,
        body: include_bytes!("graphiql/assets/LICENSE-graphiql"),
    },
    Asset {
        name: "LICENSE-react",
        content_type: TEXT,
        body: include_bytes!("graphiql/assets/LICENSE-react"),
    },
    Asset {
        name: "LICENSE-react-dom",
        content_type: TEXT,
        body: include_bytes!("graphiql/assets/LICENSE-react-dom"),
    },
];

/// Ours, and it may change without the vendored versions changing: cached briefly.
static INIT_JS: Asset = Asset {
    name: "init.js",
    content_type: JAVASCRIPT,
    body: include_bytes!("graphiql/init.js"),
};

/// What GraphiQL opens with: the original onboarding state, and the flows next to it.
const DEFAULT_QUERY: &str = "\
query MyOnboarding {
  onboardingState {
    id
    userId
    isCompleted
    currentStep
    completedAt
    createdAt
    updatedAt
  }
  flowStates {
    flow
    status
    currentStep
    doneSteps
    totalSteps
  }
}
";

/// The explorer page for `GET /graphql` from a browser. `dev_token`, when given, is put
/// in the page's default `Authorization` header so the demo query runs at once.
pub fn page(dev_token: Option<&str>) -> Response {
    let headers = dev_token.map(|token| {
        format!(
            "{:#}",
            json!({ "Authorization": format!("Bearer {token}") })
        )
    });
    let hint = match dev_token {
        Some(_) => {
            "# Run it: ▶ or Ctrl-Enter. Every field: Docs, top left.\n\
             # An admin token for publishFlow: onboarding token --dev --sub me --role admin"
        }
        None => "# It needs {\"Authorization\": \"Bearer <JWT>\"} in Headers.",
    };
    let query = format!(
        "# Your onboarding state (created on first access) and your progress in every\n\
         # flow. Flows other than the built-in `onboarding` appear once published: by\n\
         # an admin with the publishFlow mutation, or `onboarding flows publish FILE.json`.\n\
         {hint}\n{DEFAULT_QUERY}"
    );
    let config = json!({ "endpoint": "/graphql", "headers": headers, "query": query })
        .to_string()
        // Valid JSON still, and no `</script>` or `<!--` can end the script element early.
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let assets = format!("/graphiql/{ASSETS_VERSION}");
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Onboarding API · GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{assets}/graphiql.min.css">
<style>body {{ margin: 0; }} #graphiql {{ height: 100vh; }}</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script type="application/json" id="graphiql-config">{config}</script>
<script src="{assets}/react.production.min.js"></script>
<script src="{assets}/react-dom.production.min.js"></script>
<script src="{assets}/graphiql.min.js"></script>
<script src="{assets}/graphql-ws.min.js"></script>
<script src="/graphiql/init.js"></script>
</body>
</html>
"#
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            // The page may carry a development token.
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

/// Routes under `/graphiql/` serving the bundled assets (and init.js) with the right
/// content types and long cache lifetimes.
pub fn assets_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let init = Router::new().route(
        "/graphiql/init.js",
        get(|| async { serve(&INIT_JS, "public, max-age=3600") }),
    );
    VENDORED
        .iter()
        .fold(init, |router, asset| {
            let path = format!("/graphiql/{ASSETS_VERSION}/{}", asset.name);
            router.route(
                &path,
                get(|| async { serve(asset, "public, max-age=31536000, immutable") }),
            )
        })
        // 1.6 MB of scripts shrink to about 400 KB; API responses stay uncompressed.
        .layer(CompressionLayer::new())
}

fn serve(asset: &'static Asset, cache_control: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, cache_control),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    async fn get(uri: &str) -> Response {
        let request = Request::get(uri).body(Body::empty()).expect("request");
        assets_router::<()>()
            .oneshot(request)
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn the_config_cannot_close_its_script_element() {
        let token = "x</script><script>alert(1)</script><!--&";
        let html = body_text(page(Some(token))).await;
        assert_eq!(html.matches("</script>").count(), 6, "{html}");

        let start = html.find(r#"id="graphiql-config">"#).expect("config")
            + r#"id="graphiql-config">"#.len();
        let end = start + html[start..].find("</script>").expect("end of config");
        let config: serde_json::Value = serde_json::from_str(&html[start..end]).expect("json");
        let headers = config["headers"].as_str().expect("headers");
        assert_eq!(
            headers,
            format!("{{\n  \"Authorization\": \"Bearer {token}\"\n}}")
        );
    }

    #[tokio::test]
    async fn the_page_without_a_token_has_no_headers() {
        let response = page(None);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert!(body_text(response).await.contains(r#""headers":null"#));
    }

    #[tokio::test]
    async fn every_asset_the_page_links_is_served() {
        let html = body_text(page(None)).await;
        let links: Vec<&str> = html
            .split(['"'])
            .filter(|part| part.starts_with("/graphiql/"))
            .collect();
        assert_eq!(links.len(), 6, "{links:?}");
        for link in links {
            let response = get(link).await;
            assert_eq!(response.status(), 200, "{link}");
            let content_type = response.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii");
            assert!(
                content_type.starts_with("text/css") || content_type.starts_with("text/javascript"),
                "{link}"
            );
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_not_found() {
        assert_eq!(get("/graphiql/nope.js").await.status(), 404);
        assert_eq!(get("/graphiql/0.0.0/graphiql.min.js").await.status(), 404);
    }
}
