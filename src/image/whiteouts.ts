// How a layer tar says a path is gone (the OCI image spec's whiteouts, overlay's in the other
// form): ".wh.NAME" removes NAME from the layers below; ".wh..wh..opq" in a directory hides all
// the directory had below (an opaque directory). No dependencies: kilnd's start-up reads it.
export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_WHITEOUT = ".wh..wh..opq";
