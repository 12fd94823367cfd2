//! Streaming HTML injection (lol_html): unigate's App Launcher goes into the
//! module's pages right after `<body>`, chunk by chunk as they stream
//! through, never buffering a whole body. Once every snippet is placed, the
//! rest of the page passes through without being parsed at all, so a big
//! page costs little more than its `<head>`. Only `text/html` 200 responses
//! are touched; if the rewriter fails, the rest of the page passes through
//! as is.

use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// At the start of the element's content (right after its start tag).
    /// Placed as soon as the start tag is seen: the rest of the page need
    /// not be parsed for it.
    Prepend,
    /// At the end of the element's content (before its end tag).
    Append,
    /// Right after the element.
    After,
}

pub struct Injector {
    rewriter: Option<HtmlRewriter<'static, Sink>>,
    out: Arc<Mutex<Vec<u8>>>,
    /// Rules not placed yet; `usize::MAX` when some rule needs the whole page.
    pending: Arc<AtomicUsize>,
}

impl Injector {
    /// An injector that puts `snippet` (trusted HTML) at the start of `<body>`.
    pub fn new(snippet: Arc<str>) -> Injector {
        Self::with(vec![("body", Place::Prepend, snippet)])
    }

    /// An injector placing each trusted snippet at its (constant) selector.
    pub fn with(rules: Vec<(&'static str, Place, Arc<str>)>) -> Injector {
        let out = Arc::new(Mutex::new(Vec::new()));
        // Only start-tag placements finish early; an element may match more
        // than once for the others, so they keep the rewriter to the end.
        let early = rules.iter().all(|(_, p, _)| matches!(p, Place::Prepend));
        let pending = Arc::new(AtomicUsize::new(if early { rules.len() } else { usize::MAX }));
        let mut settings = Settings::new_send();
        for (selector, place, snippet) in rules {
            let pending = pending.clone();
            let mut placed = false;
            let handlers = ElementContentHandlers::default().element(move |el: &mut lol_html::send::Element| {
                match place {
                    Place::Prepend => {
                        if !placed {
                            el.prepend(&snippet, ContentType::Html);
                            placed = true;
                            let _ = pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                                (n != usize::MAX).then(|| n.saturating_sub(1))
                            });
                        }
                    }
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
            pending,
        }
    }

    /// Rewrites one body chunk in place; at the end of the stream, flushes.
    pub fn filter(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        let Some(rw) = self.rewriter.as_mut() else { return };
        let chunk = body.take().unwrap_or_default();
        // While snippets wait to be placed, feed the rewriter in small steps:
        // a page that arrives as one big chunk is parsed only a little past
        // where they go, and the rest of the chunk is copied as it is.
        let step = if self.pending.load(Ordering::Acquire) == usize::MAX {
            chunk.len().max(1)
        } else {
            STEP
        };
        let (mut fed, mut failed) = (0, false);
        while fed < chunk.len() {
            let end = (fed + step).min(chunk.len());
            if let Err(e) = rw.write(&chunk[fed..end]) {
                tracing::warn!(error = %e, "HTML injection failed; the page passes through unchanged from here");
                failed = true;
                break;
            }
            fed = end;
            if self.pending.load(Ordering::Acquire) == 0 {
                break;
            }
        }
        // Done at the end of the page, or as soon as every snippet is in:
        // ending the rewriter flushes what it holds, and later chunks pass
        // through untouched (the early return above).
        let all_placed = self.pending.load(Ordering::Acquire) == 0;
        if failed {
            self.rewriter = None;
        } else if (end_of_stream || all_placed)
            && let Some(rw) = self.rewriter.take()
            && let Err(e) = rw.end()
        {
            tracing::warn!(error = %e, "HTML injection could not finish the page");
        }
        let mut produced = std::mem::take(&mut *self.out.lock().unwrap_or_else(|p| p.into_inner()));
        // What the rewriter was not given: the raw rest of the chunk.
        produced.extend_from_slice(&chunk[fed..]);
        *body = if produced.is_empty() && !end_of_stream {
            None
        } else {
            Some(Bytes::from(produced))
        };
    }
}

/// How much of a chunk the rewriter reads at a time while snippets wait.
const STEP: usize = 256;

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
    fn prepends_to_body_across_chunk_boundaries() {
        let page = "<html><head><title>x</title></head><body><p>hello</p></body></html>";
        for split in 1..page.len() {
            let (a, b) = page.split_at(split);
            let out = run(&[a, b], "<i>L</i>");
            assert_eq!(out, page.replace("<body>", "<body><i>L</i>"), "split at {split}");
        }
    }

    #[test]
    fn prepends_to_body_and_then_passes_the_rest_through() {
        let page = "<html><head><title>x</title></head><body class=\"a\"><p class=\"q\">hello</p><div>more <b>text</b></div></body></html>";
        let want = page.replace(r#"<body class="a">"#, r#"<body class="a"><i>L</i>"#);
        for split in 1..page.len() {
            for split2 in split..page.len() {
                let (a, rest) = page.split_at(split);
                let (b, c) = rest.split_at(split2 - split);
                let mut inj = Injector::with(vec![("body", Place::Prepend, Arc::from("<i>L</i>"))]);
                let mut out = Vec::new();
                for (i, chunk) in [a, b, c].iter().enumerate() {
                    let mut body = Some(Bytes::copy_from_slice(chunk.as_bytes()));
                    inj.filter(&mut body, i == 2);
                    out.extend_from_slice(&body.unwrap_or_default());
                }
                assert_eq!(String::from_utf8(out).unwrap(), want, "splits at {split}, {split2}");
            }
        }
    }

    #[test]
    fn a_big_single_chunk_is_parsed_only_up_to_the_body() {
        let head = "<html><head><title>x</title></head><body>";
        let rest = "<p>row</p>".repeat(10_000);
        let page = format!("{head}{rest}</body></html>");
        let mut inj = Injector::new(Arc::from("<i>L</i>"));
        let mut body = Some(Bytes::from(page.clone()));
        inj.filter(&mut body, false);
        assert!(inj.rewriter.is_none(), "the rewriter is done after the first step");
        let mut tail = Some(Bytes::from_static(b"<!-- more -->"));
        inj.filter(&mut tail, true);
        let mut out = body.unwrap().to_vec();
        out.extend_from_slice(&tail.unwrap());
        let want = format!("{head}<i>L</i>{rest}</body></html><!-- more -->");
        assert_eq!(String::from_utf8(out).unwrap(), want);
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
