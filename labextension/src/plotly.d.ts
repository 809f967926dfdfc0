/** plotly.js's prebuilt bundle has no types of its own; charts.ts types what it uses. */
declare module 'plotly.js-basic-dist-min';
