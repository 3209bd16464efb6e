//! The console's static files, compiled into the binary: no CDN, no Node.js, nothing to
//! install beside `ztk`. Pages link them with a content hash (`/assets/console.js?v=…`), so
//! they can be cached for good and a new build is never mixed with an old script.

use std::sync::OnceLock;

use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::body::{self, Body};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/console.js"),
    },
    Asset {
        name: "shell.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/shell.js"),
    },
    Asset {
        name: "xterm.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/vendor/xterm.js"),
    },
    Asset {
        name: "xterm.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/vendor/xterm.css"),
    },
    Asset {
        name: "addon-fit.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/vendor/addon-fit.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("assets/icon.svg"),
    },
];

fn version(asset: &Asset) -> &'static str {
    static VERSIONS: OnceLock<Vec<String>> = OnceLock::new();
    let versions = VERSIONS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                use sha2::Digest;
                hex::encode(&sha2::Sha256::digest(a.bytes)[..6])
            })
            .collect()
    });
    let i = ASSETS
        .iter()
        .position(|a| a.name == asset.name)
        .unwrap_or(0);
    &versions[i]
}

/// The URL of an asset, with its content hash.
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/assets/{}?v={}", a.name, version(a)),
        None => format!("/assets/{name}"),
    }
}

pub fn serve(name: &str, method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = Response::new(body::full("method not allowed\n"));
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        let mut resp = Response::new(body::full("not found\n"));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    let mut resp = Response::new(if method == Method::HEAD {
        body::empty()
    } else {
        body::full(asset.bytes)
    });
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    resp
}
