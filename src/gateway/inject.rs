//! Streaming HTML injection (lol_html): unigate's App Launcher goes into the
//! module's pages just before `</body>`, chunk by chunk as they stream
//! through, never buffering a whole body. Only `text/html` 200 responses are
//! touched; if the rewriter fails, the rest of the page passes through as is.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lol_html::html_content::ContentType;
use lol_html::send::{ElementContentHandlers, HtmlRewriter, Settings};

struct Sink(Arc<Mutex<Vec<u8>>>);

impl lol_html::OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(chunk);
    }
}

/// Where a snippet goes.
#[derive(Clone, Copy, Debug)]
pub enum Place {
    /// At the end of the element's content (before its end tag).
    Append,
    /// Right after the element.
    After,
}

pub struct Injector {
    rewriter: Option<HtmlRewriter<'static, Sink>>,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Injector {
    /// An injector that appends `snippet` (trusted HTML) to `<body>`.
    pub fn new(snippet: Arc<str>) -> Injector {
        Self::with(vec![("body", Place::Append, snippet)])
    }

    /// An injector placing each trusted snippet at its (constant) selector.
    pub fn with(rules: Vec<(&'static str, Place, Arc<str>)>) -> Injector {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut settings = Settings::new_send();
        for (selector, place, snippet) in rules {
            let handlers = ElementContentHandlers::default().element(move |el: &mut lol_html::send::Element| {
                match place {
                    Place::Append => el.append(&snippet, ContentType::Html),
                    Place::After => el.after(&snippet, ContentType::Html),
                }
                Ok(())
            });
            let selector = selector.parse().expect("a constant, valid selector");
            settings = settings.append_element_content_handler((std::borrow::Cow::Owned(selector), handlers));
        }
        Injector {
            rewriter: Some(HtmlRewriter::new(settings, Sink(out.clone()))),
            out,
        }
    }

    /// Rewrites one body chunk in place; at the end of the stream, flushes.
    pub fn filter(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        let Some(rw) = self.rewriter.as_mut() else { return };
        let mut failed = false;
        if let Some(chunk) = body.as_ref()
            && let Err(e) = rw.write(chunk)
        {
            tracing::warn!(error = %e, "HTML injection failed; the page passes through unchanged from here");
            failed = true;
        }
        if failed {
            // Whatever the rewriter had already produced, then the raw chunk.
            let mut done = std::mem::take(&mut *self.out.lock().unwrap_or_else(|p| p.into_inner()));
            if let Some(chunk) = body.as_ref() {
                done.extend_from_slice(chunk);
            }
            *body = Some(Bytes::from(done));
            self.rewriter = None;
            return;
        }
        if end_of_stream
            && let Some(rw) = self.rewriter.take()
            && let Err(e) = rw.end()
        {
            tracing::warn!(error = %e, "HTML injection could not finish the page");
        }
        let produced = std::mem::take(&mut *self.out.lock().unwrap_or_else(|p| p.into_inner()));
        *body = if produced.is_empty() && !end_of_stream {
            None
        } else {
            Some(Bytes::from(produced))
        };
    }
}

/// True for responses worth rewriting: a 200 `text/html` page.
pub fn is_html_page(status: u16, content_type: Option<&str>) -> bool {
    status == 200
        && content_type.is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str], snippet: &str) -> String {
        let mut inj = Injector::new(snippet.into());
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(c.as_bytes()));
            inj.filter(&mut body, i == chunks.len() - 1);
            if let Some(b) = body {
                out.extend_from_slice(&b);
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn appends_to_body_across_chunk_boundaries() {
        let page = "<html><head><title>x</title></head><body><p>hello</p></body></html>";
        for split in 1..page.len() {
            let (a, b) = page.split_at(split);
            let out = run(&[a, b], "<i>L</i>");
            assert_eq!(out, page.replace("</body>", "<i>L</i></body>"), "split at {split}");
        }
    }

    #[test]
    fn pages_without_body_are_unchanged() {
        assert_eq!(run(&["{\"not\": \"html\"}"], "<i>L</i>"), "{\"not\": \"html\"}");
    }

    #[test]
    fn html_detection() {
        assert!(is_html_page(200, Some("text/html; charset=utf-8")));
        assert!(is_html_page(200, Some("TEXT/HTML")));
        assert!(!is_html_page(200, Some("application/json")));
        assert!(!is_html_page(101, Some("text/html")));
        assert!(!is_html_page(200, None));
    }
}
