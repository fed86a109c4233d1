/* Ends one build of code_slice_body.h (coder.c includes the body once per use with these
 * macros defined, then this): the build's macros undefined, ready for the next build. */
#undef CS_ATTR
#undef SPLIT_ROW
#undef BATCH_GATHER
#undef LMS_DECL
#undef LMS_TAPS_DECL
#undef LMS_ROW
#undef LMS_PREDICT
#undef LMS_UPDATE
#undef LMS_STORE
