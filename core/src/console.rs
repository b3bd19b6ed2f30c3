//! Which of the console's programs serves a page.
//!
//! The console is several wasm programs over one library (`app/`), each carrying only its own
//! pages, so that no page's download pays for every other page's code (one program for every
//! page passed the 400 KB gzipped budget). A program's files live in its own directory of the
//! assets (`/app/device/`, ...); the Worker answers a page's path with its program's
//! `index.html`, and a program asked (by a link followed in the browser) for another program's
//! page loads that page from the server. Both sides ask [`Program::of_page`], so they cannot
//! disagree about where a page lives.

/// One wasm program of the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// The overview, the fleet, sign-in: the assets' root `index.html`.
    Fleet,
    /// One device's (or module's) page.
    Device,
    /// Jobs, configurations, endpoints.
    Operations,
    /// The virtual device (`/virtual/`), served from its directory as it is.
    Virtual,
}

impl Program {
    /// The program whose page `path` (a URL path, `/`-separated) is. Paths no program knows are
    /// [`Program::Fleet`]'s, which says there is no such page.
    pub fn of_page(path: &str) -> Program {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "device" => Program::Device,
            "jobs" | "device-configurations" | "endpoints" => Program::Operations,
            "virtual" => Program::Virtual,
            _ => Program::Fleet,
        }
    }

    /// The asset directory whose `index.html` starts this program, for a page path; `None` when
    /// the path is served as it is (the root program's assets and its single-page fallback, the
    /// virtual device's directory).
    pub fn index(self) -> Option<&'static str> {
        match self {
            Program::Device => Some("/app/device/"),
            Program::Operations => Some("/app/operations/"),
            Program::Fleet | Program::Virtual => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_find_their_program() {
        assert_eq!(Program::of_page("/"), Program::Fleet);
        assert_eq!(Program::of_page("/fleet"), Program::Fleet);
        assert_eq!(Program::of_page("/signin"), Program::Fleet);
        assert_eq!(Program::of_page("/no/such/page"), Program::Fleet);
        assert_eq!(Program::of_page("/device/a%2Fb"), Program::Device);
        assert_eq!(Program::of_page("/device/d/tab/twin"), Program::Device);
        assert_eq!(Program::of_page("/devices"), Program::Fleet);
        assert_eq!(Program::of_page("/jobs"), Program::Operations);
        assert_eq!(Program::of_page("/device-configurations"), Program::Operations);
        assert_eq!(Program::of_page("/endpoints"), Program::Operations);
        assert_eq!(Program::of_page("/virtual/"), Program::Virtual);
        assert_eq!(Program::Device.index(), Some("/app/device/"));
        assert_eq!(Program::Fleet.index(), None);
        // The programs' own files are the root's paths, served as they are.
        assert_eq!(Program::of_page("/app/device/twinhub-device-1.wasm").index(), None);
    }
}
