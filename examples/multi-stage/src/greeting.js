// The one line the demo changes between its two builds.
"use strict";
exports.greeting = (name) => `hello, ${name}`;
