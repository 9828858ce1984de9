// ES module face of the ReactDOM UMD build loaded by index.html.
const ReactDOM = window.ReactDOM
export default ReactDOM
export const { createRoot, flushSync } = ReactDOM
