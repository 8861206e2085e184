// Optional deployment configuration, loaded before app.js. Set the API base URL here when
// the page is not served next to a development API at http://localhost:8000:
//
//   window.AIXIATE_API = "https://auth.example.com";
//
// A `?api=` query parameter overrides it, but only while the page itself is served from
// localhost (see apiBase() in app.js).
