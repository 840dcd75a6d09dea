import { render } from "./render.js";
render(document.getElementById("root"), { title: "Acme" });
