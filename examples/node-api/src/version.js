// Changed by kiln's benchmark on every warm build.
"use strict";
exports.version = "1";
