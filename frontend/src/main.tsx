// Entry point: mounts the app. The PDF viewer route (#/view/...) is its own lazily loaded screen.
import { render } from "preact";
import { App } from "./components/App";
import "./styles.css";

render(<App />, document.getElementById("app")!);
