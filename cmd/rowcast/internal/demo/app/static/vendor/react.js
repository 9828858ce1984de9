// ES module face of the React UMD build loaded by index.html (window.React),
// so that modules can `import { useState } from 'react'` without a bundler.
const React = window.React
export default React
export const {
  Children, Component, Fragment, StrictMode, createContext, createElement, forwardRef, memo,
  useCallback, useContext, useEffect, useId, useLayoutEffect, useMemo, useReducer, useRef,
  useState, useSyncExternalStore, useTransition,
} = React
